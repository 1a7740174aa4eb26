"""The PostgreSQL writer alone (no Spark): replays are no-ops, the last arrival wins,
metrics add up until the watermark."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from pinpipe.events import Table
from pinpipe.speed.writer import PostgresWriter
from pinpipe.store.schema import apply_migrations
from tests.speed.pg import query

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 12, 0, 30, tzinfo=timezone.utc)
TOPICS = {Table.PIN: "p.pin", Table.GEO: "p.geo", Table.USER: "p.user"}


def users(*rows: tuple[int, str, datetime, int]) -> pa.Table:
    return pa.table({
        "ind": pa.array([r[0] for r in rows], pa.int32()),
        "user_name": [r[1] for r in rows],
        "age": pa.array([30] * len(rows), pa.int32()),
        "date_joined": pa.array([T0] * len(rows), pa.timestamp("us", tz="UTC")),
        "broker_timestamp": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
        "kafka_partition": pa.array([0] * len(rows), pa.int32()),
        "kafka_offset": pa.array([r[3] for r in rows], pa.int64()),
    })


def pins(*rows: tuple[str, str | None, str | None, int | None, datetime, int]) -> pa.Table:
    """Clean pin rows ``(unique_id, category, poster_name, follower_count, broker time, offset)``."""
    n = len(rows)
    text = pa.array([None] * n, pa.string())
    return pa.table({
        "ind": pa.array(range(n), pa.int32()),
        "unique_id": [r[0] for r in rows],
        "title": text, "description": text,
        "follower_count": pa.array([r[3] for r in rows], pa.int64()),
        "poster_name": pa.array([r[2] for r in rows], pa.string()),
        "tag_list": text, "is_image_or_video": text, "image_src": text, "save_location": text,
        "category": pa.array([r[1] for r in rows], pa.string()),
        "downloaded": pa.array([1] * n, pa.int32()),
        "broker_timestamp": pa.array([r[4] for r in rows], pa.timestamp("us", tz="UTC")),
        "kafka_partition": pa.array([0] * n, pa.int32()),
        "kafka_offset": pa.array([r[5] for r in rows], pa.int64()),
    })


def art(unique_id: str, at: datetime, offset: int) -> tuple:
    return (unique_id, "art", None, None, at, offset)


@pytest.fixture
def writer(fresh_dsn):
    apply_migrations(fresh_dsn)
    w = PostgresWriter(fresh_dsn, lateness_s=300)
    yield w
    w.close()


def names(dsn: str) -> dict[int, str]:
    return {r["ind"]: r["user_name"] for r in query(dsn, 'SELECT ind, user_name FROM pinpipe."user"')}


def test_a_replayed_batch_writes_nothing(writer, fresh_dsn):
    batch = {Table.USER: users((1, "Ada", T0, 5)), Table.PIN: pins(art("a", T0, 1), art("b", T0, 2))}
    first = writer.write("q", 0, batch, None, TOPICS)
    again = writer.write("q", 0, batch, None, TOPICS)
    assert not first.replayed and again.replayed
    assert query(fresh_dsn, "SELECT events FROM pinpipe.category_per_minute") == [{"events": 2}]


def test_last_arrival_wins_within_and_across_batches(writer, fresh_dsn):
    writer.write("q", 0, {Table.USER: users((1, "old", T0, 5), (1, "new", T0, 6), (2, "b", T0, 7))}, None, TOPICS)
    assert names(fresh_dsn) == {1: "new", 2: "b"}
    later = T0 + timedelta(seconds=1)
    # an earlier arrival seen late (e.g. re-read by a new checkpoint) does not overwrite
    writer.write("q", 1, {Table.USER: users((1, "older", T0, 4), (2, "b2", later, 1))}, None, TOPICS)
    assert names(fresh_dsn) == {1: "new", 2: "b2"}


def test_blank_natural_key_becomes_a_dead_letter(writer, fresh_dsn):
    blank = users((1, "x", T0, 9)).set_column(0, "ind", pa.array([None], pa.int32()))
    outcome = writer.write("q", 0, {Table.USER: blank}, None, TOPICS)
    assert outcome.dead_letters == 1
    assert query(fresh_dsn, "SELECT topic, kafka_offset, reason FROM pinpipe.dead_letter") == [
        {"topic": "p.user", "kafka_offset": 9, "reason": "ind is blank after cleaning"}
    ]


def test_metrics_add_up_and_windows_behind_the_watermark_are_final(writer, fresh_dsn):
    minute = T0.replace(second=0)
    writer.write("q", 0, {Table.PIN: pins(art("a", T0, 1), art("b", T0 + timedelta(seconds=5), 2))}, None, TOPICS)
    # watermark is now T0 + 5 s - 5 min: a window 3 minutes back is still open, 10 minutes back is final
    outcome = writer.write("q", 1, {Table.PIN: pins(
        art("c", T0, 3), art("d", T0 - timedelta(minutes=3), 4), art("e", T0 - timedelta(minutes=10), 5),
    )}, None, TOPICS)
    assert outcome.late_dropped == 1
    rows = query(fresh_dsn, "SELECT window_start, window_end, events FROM pinpipe.category_per_minute ORDER BY 1")
    assert rows == [
        {"window_start": minute - timedelta(minutes=3), "window_end": minute - timedelta(minutes=2), "events": 1},
        {"window_start": minute, "window_end": minute + timedelta(minutes=1), "events": 3},
    ]
    text = "SELECT max_event_time, watermark FROM pinpipe.stream_watermark WHERE query_id = 'q'"
    later = T0 + timedelta(seconds=5)
    assert query(fresh_dsn, text) == [{"max_event_time": later, "watermark": later - timedelta(minutes=5)}]


def test_poster_activity_counts_each_sliding_window_holding_the_post(fresh_dsn):
    apply_migrations(fresh_dsn)
    writer = PostgresWriter(fresh_dsn, lateness_s=3600, poster_window_s=120, poster_slide_s=60)
    try:
        # T0 is 12:00:30: the 2-minute windows every minute holding it start at 11:59 and 12:00.
        writer.write("q", 0, {Table.PIN: pins(
            ("a", "art", "Ann", 10, T0, 1), ("b", None, "Ann", 30, T0, 2), ("c", "art", None, 99, T0, 3),
            ("d", "art", "Bob", None, T0 + timedelta(seconds=40), 4),  # 12:01:10: windows 12:00, 12:01
        )}, None, TOPICS)
    finally:
        writer.close()
    at = T0.replace(minute=0, second=0)
    rows = query(fresh_dsn, "SELECT window_start, window_end, poster_name, posts, max_follower_count "
                            "FROM pinpipe.poster_activity ORDER BY 1, 3")
    assert rows == [
        {"window_start": at - timedelta(minutes=1), "window_end": at + timedelta(minutes=1),
         "poster_name": "Ann", "posts": 2, "max_follower_count": 30},
        {"window_start": at, "window_end": at + timedelta(minutes=2), "poster_name": "Ann", "posts": 2,
         "max_follower_count": 30},
        {"window_start": at, "window_end": at + timedelta(minutes=2), "poster_name": "Bob", "posts": 1,
         "max_follower_count": None},
        {"window_start": at + timedelta(minutes=1), "window_end": at + timedelta(minutes=3),
         "poster_name": "Bob", "posts": 1, "max_follower_count": None},
    ]
    # Pins without a category count nowhere in category_per_minute.
    assert query(fresh_dsn, "SELECT window_start, events FROM pinpipe.category_per_minute ORDER BY 1") == [
        {"window_start": at, "events": 2}, {"window_start": at + timedelta(minutes=1), "events": 1},
    ]


def test_poster_panes_take_late_posts_until_the_watermark_passes_their_end(fresh_dsn):
    apply_migrations(fresh_dsn)
    writer = PostgresWriter(fresh_dsn, lateness_s=300, poster_window_s=120, poster_slide_s=60)
    noon = T0.replace(second=0)
    try:
        writer.write("q", 0, {Table.PIN: pins(
            ("a", "art", "Ann", 10, T0, 1), ("b", "art", "Bob", 5, noon + timedelta(minutes=10, seconds=30), 2),
        )}, None, TOPICS)
        # The watermark is now 12:10:30 - 5 min = 12:05:30.
        outcome = writer.write("q", 1, {Table.PIN: pins(
            ("c", "art", "Ann", 20, noon + timedelta(minutes=5, seconds=50), 3),  # pane 12:05-12:06, open
            ("d", "art", "Ann", 99, noon + timedelta(minutes=4, seconds=59), 4),  # pane 12:04-12:05, final
        )}, None, TOPICS)
    finally:
        writer.close()
    assert outcome.late_dropped == 2  # its minute of category_per_minute and its pane
    panes = query(fresh_dsn, "SELECT pane_start, pane_end, poster_name, posts, max_follower_count "
                             "FROM pinpipe.poster_pane ORDER BY 1, 3")
    minute = timedelta(minutes=1)
    assert panes == [
        {"pane_start": noon, "pane_end": noon + minute, "poster_name": "Ann", "posts": 1, "max_follower_count": 10},
        {"pane_start": noon + 5 * minute, "pane_end": noon + 6 * minute, "poster_name": "Ann", "posts": 1,
         "max_follower_count": 20},
        {"pane_start": noon + 10 * minute, "pane_end": noon + 11 * minute, "poster_name": "Bob", "posts": 1,
         "max_follower_count": 5},
    ]
    # The latest complete 2-minute window holding posts: 12:10-12:12, from its panes alone.
    assert query(fresh_dsn, "SELECT window_start, window_end, poster_name, posts, rank FROM pinpipe.top_posters") == [
        {"window_start": noon + 10 * minute, "window_end": noon + 12 * minute, "poster_name": "Bob", "posts": 1,
         "rank": 1},
    ]


def test_poster_window_must_be_whole_slides():
    with pytest.raises(ValueError, match="whole number of slides"):
        PostgresWriter("postgresql://unused", lateness_s=60, poster_window_s=90, poster_slide_s=60)


# --- PostgreSQL lost and back -------------------------------------------------------------


def terminate_other_backends(dsn: str) -> int:
    """End every other session on ``dsn``'s database, as a PostgreSQL restart would; how many."""
    return len(query(dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()"))


def test_a_dropped_connection_is_reopened_and_the_batch_written_once(fresh_dsn):
    apply_migrations(fresh_dsn)
    writer = PostgresWriter(fresh_dsn, lateness_s=300, wait_s=30)
    try:
        writer.write("q", 0, {Table.PIN: pins(art("a", T0, 1))}, None, TOPICS)
        assert terminate_other_backends(fresh_dsn) == 1  # the writer's connection
        outcome = writer.write("q", 1, {Table.PIN: pins(art("b", T0, 2), art("c", T0, 3))}, None, TOPICS)
    finally:
        writer.close()
    assert not outcome.replayed and outcome.upserted == {"pin": 2}
    assert [r["unique_id"] for r in query(fresh_dsn, "SELECT unique_id FROM pinpipe.pin ORDER BY 1")] == ["a", "b", "c"]
    assert query(fresh_dsn, "SELECT events FROM pinpipe.category_per_minute") == [{"events": 3}]


def test_without_a_wait_the_lost_connection_fails_the_batch(fresh_dsn):
    import psycopg

    apply_migrations(fresh_dsn)
    writer = PostgresWriter(fresh_dsn, lateness_s=300, wait_s=0)
    try:
        writer.write("q", 0, {Table.PIN: pins(art("a", T0, 1))}, None, TOPICS)
        terminate_other_backends(fresh_dsn)
        with pytest.raises(psycopg.OperationalError):
            writer.write("q", 1, {Table.PIN: pins(art("b", T0, 2))}, None, TOPICS)
    finally:
        writer.close()


def test_a_database_that_answers_late_is_waited_for_then_given_up_on(pg_dsn):
    """The writer's database does not exist at first (every connection fails, as while
    PostgreSQL restarts): it waits; created 1.5 s later, the batch lands. Never there: the
    error comes after ``wait_s``."""
    import threading
    import time
    import uuid

    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"t_{uuid.uuid4().hex[:12]}"
    dsn = make_conninfo(pg_dsn, dbname=name)

    def create_later() -> None:
        time.sleep(1.5)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        apply_migrations(dsn)

    creator = threading.Thread(target=create_later)
    creator.start()
    writer = PostgresWriter(dsn, lateness_s=300, wait_s=60)
    try:
        began = time.monotonic()
        outcome = writer.write("q", 0, {Table.PIN: pins(art("a", T0, 1))}, None, TOPICS)
        assert time.monotonic() - began >= 1.5
        assert not outcome.replayed and outcome.upserted["pin"] == 1
        assert query(dsn, "SELECT unique_id FROM pinpipe.pin") == [{"unique_id": "a"}]
    finally:
        creator.join()
        writer.close()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    never = PostgresWriter(make_conninfo(pg_dsn, dbname=f"t_{uuid.uuid4().hex[:12]}"), lateness_s=300, wait_s=1.0)
    began = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        never.write("q", 0, {Table.PIN: pins(art("a", T0, 1))}, None, TOPICS)
    assert 1.0 <= time.monotonic() - began < 10


def test_a_dead_letter_of_a_new_log_at_an_old_offset_is_kept_and_a_replay_is_not(writer, fresh_dsn):
    """A broker restarted with an empty log numbers records from 0 again: the dead letter at
    (p.user, 0, 9) of the new log is another record (a later broker time) and is kept; the same
    record read again is not stored twice."""
    blank = users((1, "x", T0, 9)).set_column(0, "ind", pa.array([None], pa.int32()))
    new_log = users((1, "y", T0 + timedelta(hours=1), 9)).set_column(0, "ind", pa.array([None], pa.int32()))
    assert writer.write("q", 0, {Table.USER: blank}, None, TOPICS).dead_letters == 1
    assert writer.write("q", 1, {Table.USER: new_log}, None, TOPICS).dead_letters == 1
    assert writer.write("q", 2, {Table.USER: blank}, None, TOPICS).dead_letters == 0  # read again
    rows = query(fresh_dsn, "SELECT kafka_offset, broker_timestamp FROM pinpipe.dead_letter ORDER BY 2")
    assert rows == [{"kafka_offset": 9, "broker_timestamp": T0},
                    {"kafka_offset": 9, "broker_timestamp": T0 + timedelta(hours=1)}]
