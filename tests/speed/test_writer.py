"""The PostgreSQL writer alone (no Spark): replays are no-ops, the last arrival wins,
metrics add up until the watermark."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from pinpipe.events import Table
from pinpipe.serve.schema import apply_migrations
from pinpipe.speed.writer import PostgresWriter
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


def categories(*rows: tuple[datetime, str, int]) -> pa.Table:
    return pa.table({
        "window_start": pa.array([r[0] for r in rows], pa.timestamp("us", tz="UTC")),
        "window_end": pa.array([r[0] + timedelta(minutes=1) for r in rows], pa.timestamp("us", tz="UTC")),
        "category": [r[1] for r in rows],
        "events": pa.array([r[2] for r in rows], pa.int64()),
    })


@pytest.fixture
def writer(fresh_dsn):
    apply_migrations(fresh_dsn)
    w = PostgresWriter(fresh_dsn, lateness_s=300)
    yield w
    w.close()


def names(dsn: str) -> dict[int, str]:
    return {r["ind"]: r["user_name"] for r in query(dsn, 'SELECT ind, user_name FROM pinpipe."user"')}


def test_a_replayed_batch_writes_nothing(writer, fresh_dsn):
    batch = {Table.USER: users((1, "Ada", T0, 5))}
    first = writer.write("q", 0, batch, None, {"category_per_minute": categories((T0, "art", 2))}, TOPICS)
    again = writer.write("q", 0, batch, None, {"category_per_minute": categories((T0, "art", 2))}, TOPICS)
    assert not first.replayed and again.replayed
    assert query(fresh_dsn, "SELECT events FROM pinpipe.category_per_minute") == [{"events": 2}]


def test_last_arrival_wins_within_and_across_batches(writer, fresh_dsn):
    writer.write("q", 0, {Table.USER: users((1, "old", T0, 5), (1, "new", T0, 6), (2, "b", T0, 7))}, None, {}, TOPICS)
    assert names(fresh_dsn) == {1: "new", 2: "b"}
    later = T0 + timedelta(seconds=1)
    # an earlier arrival seen late (e.g. re-read by a new checkpoint) does not overwrite
    writer.write("q", 1, {Table.USER: users((1, "older", T0, 4), (2, "b2", later, 1))}, None, {}, TOPICS)
    assert names(fresh_dsn) == {1: "new", 2: "b2"}


def test_blank_natural_key_becomes_a_dead_letter(writer, fresh_dsn):
    blank = users((1, "x", T0, 9)).set_column(0, "ind", pa.array([None], pa.int32()))
    outcome = writer.write("q", 0, {Table.USER: blank}, None, {}, TOPICS)
    assert outcome.dead_letters == 1
    assert query(fresh_dsn, "SELECT topic, kafka_offset, reason FROM pinpipe.dead_letter") == [
        {"topic": "p.user", "kafka_offset": 9, "reason": "ind is blank after cleaning"}
    ]


def test_metrics_add_up_and_windows_behind_the_watermark_are_final(writer, fresh_dsn):
    minute = T0.replace(second=0)
    writer.write("q", 0, {Table.USER: users((1, "a", T0, 1))}, None,
                 {"category_per_minute": categories((minute, "art", 2))}, TOPICS)
    # watermark is now T0 - 5 min: a window 3 minutes back is still open, 10 minutes back is final
    outcome = writer.write("q", 1, {Table.USER: users((2, "b", T0, 2))}, None, {
        "category_per_minute": categories(
            (minute, "art", 1), (minute - timedelta(minutes=3), "art", 1),
            (minute - timedelta(minutes=10), "art", 1),
        )
    }, TOPICS)
    assert outcome.late_dropped == 1
    rows = query(fresh_dsn, "SELECT window_start, events FROM pinpipe.category_per_minute ORDER BY 1")
    assert rows == [
        {"window_start": minute - timedelta(minutes=3), "events": 1},
        {"window_start": minute, "events": 3},
    ]
    text = "SELECT max_event_time, watermark FROM pinpipe.stream_watermark WHERE query_id = 'q'"
    assert query(fresh_dsn, text) == [{"max_event_time": T0, "watermark": T0 - timedelta(minutes=5)}]
