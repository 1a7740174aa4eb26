"""The stream job end to end: Kafka -> Spark (shared cleaning) -> PostgreSQL, in process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest

from pinpipe.events import Table
from pinpipe.speed.job import start_stream
from tests.speed.conftest import create_topics, speed_settings
from tests.speed.pg import clean_rows, query, wait_for
from tests.speed.records import clean_geo, clean_pin, clean_user, geo, pin, user

pytestmark = pytest.mark.integration


@contextmanager
def running(spark, settings, bootstrap, dsn, checkpoint) -> Iterator[object]:
    query_, handler = start_stream(spark, settings, bootstrap, dsn, checkpoint_dir=checkpoint)
    try:
        yield query_
        assert query_.exception() is None
    finally:
        query_.stop()
        handler.close()


def test_records_reach_postgres_clean_and_last_arrival_wins(
    spark, kafka_bootstrap, fresh_dsn, topic_prefix, produce, traversable_dir
):
    create_topics(kafka_bootstrap, topic_prefix)
    settings = speed_settings(topic_prefix)
    produce(topic_prefix, Table.PIN, [
        pin(1, "u-1", title="first version"),
        pin(2, "u-2", follower_count="1M", title="No Title Data Available", category="travel",
            save_location="Local save in /data/travel"),
        pin(3, "u-3", follower_count="User Info Error", poster_name="User Info Error",
            tag_list="N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e", image_src="Image src error."),
    ])
    produce(topic_prefix, Table.PIN, [pin(1, "u-1", title="second version")])  # arrives last
    produce(topic_prefix, Table.GEO, [geo(1), geo(2, "Antarctica (the territory South of 60 deg S)"), geo(1)])
    produce(topic_prefix, Table.USER, [user(1), user(2, "Grace", "Hopper", 52)])

    with running(spark, settings, kafka_bootstrap, fresh_dsn, str(traversable_dir / "ckpt")) as q:
        wait_for(lambda: len(clean_rows(fresh_dsn, "pin")) == 3 and len(clean_rows(fresh_dsn, "user")) == 2
                 and len(clean_rows(fresh_dsn, "geo")) == 2, what="clean rows", query=q)
        time.sleep(1.5)  # a later batch must not change anything

    assert clean_rows(fresh_dsn, "pin") == [
        clean_pin(1, "u-1", title="second version"),
        clean_pin(2, "u-2", follower_count=1_000_000, title=None, category="travel",
                  save_location="/data/travel"),
        clean_pin(3, "u-3", follower_count=None, poster_name=None, tag_list=None, image_src=None),
    ]
    assert clean_rows(fresh_dsn, "geo") == [
        clean_geo(1), clean_geo(2, "Antarctica (the territory South of 60 deg S)")
    ]
    assert clean_rows(fresh_dsn, "user") == [clean_user(1), clean_user(2, "Grace Hopper", 52)]
    assert query(fresh_dsn, "SELECT count(*) AS n FROM pinpipe.dead_letter")[0]["n"] == 0


def test_poison_records_go_to_dead_letters_and_the_stream_goes_on(
    spark, kafka_bootstrap, fresh_dsn, topic_prefix, produce, traversable_dir
):
    create_topics(kafka_bootstrap, topic_prefix)
    settings = speed_settings(topic_prefix)
    produce(topic_prefix, Table.PIN, [b"{not json", pin(1, "u-1")])
    produce(topic_prefix, Table.GEO, [{"ind": "seven", "country": "France"}])
    produce(topic_prefix, Table.USER, [{"first_name": "No", "last_name": "Index"}])

    with running(spark, settings, kafka_bootstrap, fresh_dsn, str(traversable_dir / "ckpt")) as q:
        wait_for(lambda: query(fresh_dsn, "SELECT count(*) AS n FROM pinpipe.dead_letter")[0]["n"] == 3,
                 what="three dead letters", query=q)
        produce(topic_prefix, Table.PIN, [pin(2, "u-2")])
        wait_for(lambda: len(clean_rows(fresh_dsn, "pin")) == 2, what="the record after the poison", query=q)

    letters = query(fresh_dsn, "SELECT topic, value, reason FROM pinpipe.dead_letter ORDER BY topic")
    assert letters == [
        {"topic": f"{topic_prefix}.geo", "value": '{"ind":"seven","country":"France"}',
         "reason": "not a JSON object of geo field types"},
        {"topic": f"{topic_prefix}.pin", "value": "{not json", "reason": "not a JSON object of pin field types"},
        {"topic": f"{topic_prefix}.user", "value": '{"first_name":"No","last_name":"Index"}',
         "reason": "missing ind"},
    ]


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def test_late_events_update_their_window_until_the_watermark(
    spark, kafka_bootstrap, fresh_dsn, topic_prefix, produce, traversable_dir
):
    create_topics(kafka_bootstrap, topic_prefix)
    settings = speed_settings(topic_prefix, lateness_s=600)
    now = datetime.now(timezone.utc)
    late, too_late = now - timedelta(minutes=3), now - timedelta(hours=1)
    counts = "SELECT window_start, events FROM pinpipe.category_per_minute WHERE category = %s ORDER BY 1"

    produce(topic_prefix, Table.PIN, [pin(1, "u-1", category="art"), pin(2, "u-2", category="art")])
    with running(spark, settings, kafka_bootstrap, fresh_dsn, str(traversable_dir / "ckpt")) as q:
        wait_for(lambda: sum(r["events"] for r in query(fresh_dsn, counts, ("art",))) == 2,
                 what="the first window", query=q)
        wait_for(lambda: query(fresh_dsn, "SELECT count(*) AS n FROM pinpipe.stream_watermark")[0]["n"] == 1,
                 what="the watermark", query=q)
        produce(topic_prefix, Table.PIN, [pin(3, "u-3", category="art")], timestamp_ms=int(late.timestamp() * 1000))
        produce(topic_prefix, Table.PIN, [pin(4, "u-4", category="art")],
                timestamp_ms=int(too_late.timestamp() * 1000))
        produce(topic_prefix, Table.PIN, [pin(5, "u-5", category="quotes")])  # a marker after them
        wait_for(lambda: query(fresh_dsn, counts, ("quotes",)) != [], what="the marker", query=q)

    art = {row["window_start"]: row["events"] for row in query(fresh_dsn, counts, ("art",))}
    assert art.get(_minute(late)) == 1  # a late event corrected its (earlier) window
    assert _minute(too_late) not in art  # behind the watermark: windows are final
    assert sum(art.values()) == 3
    # Every record is still in the clean table, however late.
    assert len(clean_rows(fresh_dsn, "pin")) == 5


def test_the_warm_up_feeds_the_stream_plan_records_shaped_as_the_source_gives_them(spark):
    from pyspark.sql.types import StructType

    from pinpipe.speed.source import KAFKA_SCHEMA
    from pinpipe.speed.warmup import warm_up_records

    settings = speed_settings("warm")
    records = warm_up_records(spark, settings, rows=4)

    assert records.schema == StructType.fromDDL(KAFKA_SCHEMA)
    per_topic = {row["topic"]: row["count"] for row in records.groupBy("topic").count().collect()}
    assert per_topic == {"warm.pin": 4, "warm.geo": 4, "warm.user": 4}
    assert records.where("key IS NOT NULL OR value_bytes IS NOT NULL").count() == 0


def test_the_checkpoint_tells_the_offsets_of_the_last_committed_batch(traversable_dir):
    # Spark's layout: offsets/<batch> is planned first, commits/<batch> written once it is done.
    from pinpipe.speed.checkpoint import committed_offsets

    checkpoint = traversable_dir / "ckpt"
    (checkpoint / "offsets").mkdir(parents=True)
    (checkpoint / "commits").mkdir()
    assert committed_offsets(str(checkpoint)) is None  # nothing committed yet
    metadata = '{"batchWatermarkMs":0,"batchTimestampMs":1,"conf":{}}'
    for batch, offsets in ((0, '{"p.pin": {"0": 3, "1": 0}}'), (1, '{"p.pin": {"0": 9, "1": 4}}'),
                           (2, '{"p.pin": {"0": 12, "1": 4}}')):
        (checkpoint / "offsets" / str(batch)).write_text(f"v1\n{metadata}\n{offsets}")
    for batch in (0, 1):  # batch 2 planned, not committed
        (checkpoint / "commits" / str(batch)).write_text('v1\n{"nextBatchWatermarkMs":0}')

    assert committed_offsets(str(checkpoint)) == {("p.pin", 0): 9, ("p.pin", 1): 4}
    assert committed_offsets(f"file://{checkpoint}") == {("p.pin", 0): 9, ("p.pin", 1): 4}
    assert committed_offsets("s3://bucket/ckpt") is None


def test_a_micro_batch_already_written_is_not_read_again(spark, fresh_dsn, traversable_dir):
    """A job killed after its batch's PostgreSQL commit and before Spark's replays the batch:
    the handler finds it written and does not evaluate it (this one raises if evaluated). A
    batch not yet written is read (and here raises)."""
    import json

    from pinpipe.speed.job import MicroBatchHandler
    from pinpipe.store.schema import apply_migrations

    apply_migrations(fresh_dsn)
    checkpoint = traversable_dir / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "metadata").write_text(json.dumps({"id": "query-1"}))
    query(fresh_dsn, "INSERT INTO pinpipe.stream_batch (query_id, batch_id, records) "
                     "VALUES ('query-1', 7, 3) RETURNING 1")
    handler = MicroBatchHandler(speed_settings("written"), fresh_dsn, str(checkpoint))
    poisoned = spark.range(1).selectExpr("raise_error('the batch was read') AS value")
    try:
        handler(poisoned, 7)  # written: not read
        with pytest.raises(Exception, match="the batch was read"):
            handler(poisoned, 8)
    finally:
        handler.close()
    # With the Delta output on, a batch PostgreSQL has but the Delta tables lack is read again.
    with_delta = MicroBatchHandler(speed_settings("written", lake=str(traversable_dir / "lake")),
                                   fresh_dsn, str(checkpoint))
    try:
        with pytest.raises(Exception, match="the batch was read"):
            with_delta(poisoned, 7)
    finally:
        with_delta.close()
    assert query(fresh_dsn, "SELECT batch_id FROM pinpipe.stream_batch") == [{"batch_id": 7}]
