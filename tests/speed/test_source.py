"""The pinpipe-kafka streaming source on a real broker and a real Spark."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone

import pytest

from pinpipe.services.topics import ensure_topics
from pinpipe.speed.source import register

pytestmark = pytest.mark.integration


class Collector:
    """A foreachBatch function keeping every row it saw, by batch."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.batches: list[int] = []
        self.tasks: list[int] = []  # Spark partitions of each non-empty batch
        self.lock = threading.Lock()

    def __call__(self, df, batch_id: int) -> None:
        rows = df.toArrow().to_pylist()
        tasks = df.rdd.getNumPartitions() if rows else None
        with self.lock:
            self.batches.append(len(rows))
            self.rows.extend(rows)
            if tasks is not None:
                self.tasks.append(tasks)

    def wait(self, count: int, query, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.rows) < count:
            assert query.exception() is None, query.exception()
            assert time.monotonic() < deadline, f"{len(self.rows)} of {count} rows after {timeout_s} s"
            time.sleep(0.2)


def run_query(spark, bootstrap: str, topic: str, checkpoint: str, collector: Collector, **options: str):
    register(spark)
    reader = (
        spark.readStream.format("pinpipe-kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", topic)
    )
    for name, value in options.items():
        reader = reader.option(name, value)
    return (
        reader.load()
        .writeStream.foreachBatch(collector)
        .option("checkpointLocation", checkpoint)
        .trigger(processingTime="0.5 seconds")
        .start()
    )


def produce(bootstrap: str, topic: str, first: int, count: int, partitions: int = 2) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for n in range(first, first + count):
        producer.produce(topic, key=str(n).encode(), value=json.dumps({"n": n}).encode(),
                         partition=n % partitions)
    assert producer.flush(30) == 0


@pytest.fixture
def topic(kafka_bootstrap, topic_prefix) -> str:
    name = f"{topic_prefix}.src"
    ensure_topics({"bootstrap.servers": kafka_bootstrap}, [name], 2)
    return name


def numbers(rows: list[dict]) -> list[int]:
    return sorted(json.loads(row["value"])["n"] for row in rows)


@pytest.mark.parametrize("max_partitions", [None, "1"], ids=["task-per-partition", "one-task"])
def test_restart_from_checkpoint_has_no_gap_and_no_repeat(
    spark, kafka_bootstrap, topic, traversable_dir, max_partitions
):
    checkpoint = str(traversable_dir / "ckpt")
    options = {"maxOffsetsPerTrigger": "60"}
    if max_partitions:
        options["maxPartitions"] = max_partitions
    produce(kafka_bootstrap, topic, 0, 300)
    first = Collector()
    query = run_query(spark, kafka_bootstrap, topic, checkpoint, first, **options)
    try:
        first.wait(300, query)
        time.sleep(1.0)
    finally:
        query.stop()
    assert numbers(first.rows) == list(range(300))
    assert max(first.batches) <= 60  # maxOffsetsPerTrigger holds

    produce(kafka_bootstrap, topic, 300, 150)
    second = Collector()
    query = run_query(spark, kafka_bootstrap, topic, checkpoint, second, **options)
    try:
        second.wait(150, query)
        time.sleep(1.0)
    finally:
        query.stop()
    assert numbers(second.rows) == list(range(300, 450))
    offsets = sorted((r["partition"], r["offset"]) for r in first.rows + second.rows)
    assert offsets == sorted([(0, o) for o in range(225)] + [(1, o) for o in range(225)])
    # both Kafka partitions had records in every batch: one task each, or one task for both
    assert set(first.tasks + second.tasks) == ({1} if max_partitions else {2})


def test_columns_like_sparks_kafka_source(spark, kafka_bootstrap, topic, traversable_dir):
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, key=b"k1", value='{"text":"é…"}'.encode(), partition=0, timestamp=1_600_000_000_123)
    producer.produce(topic, value=b"\xff\xfe", partition=1, timestamp=1_600_000_000_000)
    assert producer.flush(30) == 0
    rows = Collector()
    query = run_query(spark, kafka_bootstrap, topic, str(traversable_dir / "ckpt"), rows)
    try:
        rows.wait(2, query)
    finally:
        query.stop()
    by_partition = {row["partition"]: row for row in rows.rows}
    assert by_partition[0] == {
        "key": "k1", "value": '{"text":"é…"}', "value_bytes": None, "topic": topic, "partition": 0,
        "offset": 0, "timestamp": datetime(2020, 9, 13, 12, 26, 40, 123000, tzinfo=timezone.utc),
        "timestampType": 1,
    }
    assert by_partition[1]["value"] is None and by_partition[1]["value_bytes"] == b"\xff\xfe"


def test_starting_offsets_latest_and_json(spark, kafka_bootstrap, topic, traversable_dir):
    produce(kafka_bootstrap, topic, 0, 10)  # partition 0: 0,2,4,6,8; partition 1: 1,3,5,7,9

    latest = Collector()
    query = run_query(spark, kafka_bootstrap, topic, str(traversable_dir / "a"), latest,
                      startingOffsets="latest")
    try:
        deadline = time.monotonic() + 120
        while query.lastProgress is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the first (empty) batch planned the start
        produce(kafka_bootstrap, topic, 10, 4)
        latest.wait(4, query)
        time.sleep(1.0)
    finally:
        query.stop()
    assert numbers(latest.rows) == [10, 11, 12, 13]

    chosen = Collector()
    spec = json.dumps({topic: {"0": 3, "1": -2}})
    query = run_query(spark, kafka_bootstrap, topic, str(traversable_dir / "b"), chosen, startingOffsets=spec)
    try:
        chosen.wait(4 + 7, query)
        time.sleep(1.0)
    finally:
        query.stop()
    # partition 0 from offset 3 (records 6, 8, 10, 12); partition 1 from the beginning
    assert numbers(chosen.rows) == [1, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13]


def test_only_a_first_batch_without_records_gets_an_empty_warm_up_task(kafka_bootstrap, topic, monkeypatch):
    from pinpipe.speed import reader as source
    from pinpipe.speed.source import KafkaInputPartition, KafkaPartitionRange, KafkaStreamReader

    kept: dict = {}  # the consumer read() keeps for the next task, closed here, not at exit
    monkeypatch.setattr(source, "_READER_CONSUMERS", kept)

    options = {"subscribe": topic, "kafka.bootstrap.servers": kafka_bootstrap}
    idle = {topic: {"0": 5, "1": 0}}
    later = {topic: {"0": 7, "1": 0}}

    reader = KafkaStreamReader(options)
    assert reader.partitions(idle, idle) == [KafkaInputPartition(())]
    # reads nothing, waits for nothing: one empty Arrow batch
    assert [batch.num_rows for batch in reader.read(KafkaInputPartition(()))] == [0]
    for consumer in kept.values():
        consumer.close()
    assert reader.partitions(idle, idle) == []  # later idle batches run no task
    assert reader.partitions(idle, later) == [KafkaInputPartition((KafkaPartitionRange(topic, 0, 5, 7),))]

    busy_from_the_start = KafkaStreamReader(options)
    assert busy_from_the_start.partitions(idle, later) == [
        KafkaInputPartition((KafkaPartitionRange(topic, 0, 5, 7),))
    ]
    assert busy_from_the_start.partitions(later, later) == []
