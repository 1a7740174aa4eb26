"""The source's planning against brokers that restart or do not answer, without Spark: the
driver-side calls Spark makes (initialOffset, latestOffset, partitions), made by hand."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from pyspark.sql.streaming.datasource import ReadAllAvailable

from pinpipe.services.broker import EmbeddedBroker, free_port
from pinpipe.speed.journal import SourceJournal
from pinpipe.speed.reader import KafkaInputPartition, KafkaPartitionRange, KafkaSourceError
from pinpipe.speed.source import KafkaStreamReader

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOPIC = "faults.src"


def produce(bootstrap: str, partition: int, count: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for n in range(count):
        producer.produce(TOPIC, value=json.dumps({"n": n}).encode(), partition=partition)
    assert producer.flush(30) == 0


def create_topic(bootstrap: str) -> None:
    from pinpipe.services.topics import ensure_topics

    ensure_topics({"bootstrap.servers": bootstrap}, [TOPIC], 2)


def reader_for(bootstrap: str, journal: Path, **options: str) -> KafkaStreamReader:
    return KafkaStreamReader({
        "kafka.bootstrap.servers": bootstrap, "subscribe": TOPIC, "pinpipe.stateDir": str(journal), **options,
    })  # fmt: skip


def test_a_restarted_log_is_read_from_its_start_and_the_unread_range_reported(traversable_dir, caplog):
    port = free_port()
    journal = traversable_dir / "journal"
    with EmbeddedBroker(traversable_dir / "a", port=port) as first:
        create_topic(first.bootstrap_servers)
        produce(first.bootstrap_servers, 0, 10)
        reader = reader_for(first.bootstrap_servers, journal, maxOffsetsPerTrigger="4")
        start = json.loads(json.dumps(reader.initialOffset()))  # as Spark stores it
        assert start == {TOPIC: {"0": 0, "1": 0}, "@log": {"cluster": first.cluster_id}}
        end = json.loads(json.dumps(reader.latestOffset(start, reader.getDefaultReadLimit())))
        assert end == {TOPIC: {"0": 4, "1": 0}, "@log": {"cluster": first.cluster_id}}
        # the batch [0, 4) commits; the probe has seen the end at 10
    reader.stop()
    with EmbeddedBroker(traversable_dir / "b", port=port) as second:
        create_topic(second.bootstrap_servers)
        produce(second.bootstrap_servers, 0, 2)
        produce(second.bootstrap_servers, 1, 1)
        with caplog.at_level(logging.WARNING, logger="pinpipe"):
            after = json.loads(json.dumps(reader.latestOffset(end, ReadAllAvailable())))
        assert after == {
            TOPIC: {"0": 2, "1": 1},
            "@log": {"cluster": second.cluster_id, "from": {TOPIC: {"0": 0, "1": 0}}},
        }
        # the batch reads the new log from its start, though its end is below the old start
        assert reader.partitions(end, after) == [
            KafkaInputPartition((KafkaPartitionRange(TOPIC, 0, 0, 2),), second.cluster_id),
            KafkaInputPartition((KafkaPartitionRange(TOPIC, 1, 0, 1),), second.cluster_id),
        ]
        # nothing new: the same offsets back, so Spark plans no batch
        assert reader.latestOffset(after, ReadAllAvailable()) == after
        reader.stop()
    warning = next(r.getMessage() for r in caplog.records if "log restarted" in r.getMessage())
    assert f"{TOPIC}[0] offsets 4-9 (6 records)" in warning and second.cluster_id in warning
    events, _ = SourceJournal(journal).events()
    assert [(e["kind"], e["lost"]) for e in events] == [
        ("log_restart", [{"topic": TOPIC, "partition": 0, "first": 4, "end": 10},
                         {"topic": TOPIC, "partition": 1, "first": 0, "end": 0}]),
    ]


def test_a_batch_planned_on_a_log_that_is_gone_reads_nothing(traversable_dir):
    port = free_port()
    journal = traversable_dir / "journal"
    with EmbeddedBroker(traversable_dir / "a", port=port) as first:
        old_cluster = first.cluster_id
    with EmbeddedBroker(traversable_dir / "b", port=port) as second:
        create_topic(second.bootstrap_servers)
        produce(second.bootstrap_servers, 0, 5)  # offsets 0-4 exist again, in another log
        reader = reader_for(second.bootstrap_servers, journal)
        start = {TOPIC: {"0": 1, "1": 0}, "@log": {"cluster": old_cluster}}
        end = {TOPIC: {"0": 3, "1": 0}, "@log": {"cluster": old_cluster}}
        # a replay (planned by an earlier reader): nothing to read, only the first batch's warm-up task
        assert reader.partitions(start, end) == [KafkaInputPartition((), old_cluster)]
        planned = KafkaInputPartition((KafkaPartitionRange(TOPIC, 0, 1, 3),), old_cluster)
        assert list(reader.read(planned)) == []  # a task of a batch planned before the restart
        reader.stop()
    events, _ = SourceJournal(journal).events()
    assert [(e["kind"], e["lost"]) for e in events] == [
        ("range_lost", [{"topic": TOPIC, "partition": 0, "first": 1, "end": 3}]),
    ] * 2


def test_a_broker_that_does_not_answer_is_waited_for_then_given_up_on(traversable_dir):
    reader = reader_for(f"127.0.0.1:{free_port()}", traversable_dir / "journal",
                        metadataTimeoutMs="300", brokerWaitMs="1500")
    start = {TOPIC: {"0": 7}, "@log": {"cluster": "c-1"}}
    assert reader.latestOffset(start, ReadAllAvailable()) == start  # no new data: no batch
    state = SourceJournal(traversable_dir / "journal").state()
    assert state["unreachable_since"] > 0
    deadline = time.monotonic() + 10
    with pytest.raises(KafkaSourceError, match="did not answer"):
        while time.monotonic() < deadline:
            assert reader.latestOffset(start, ReadAllAvailable()) == start
    reader.stop()


def test_a_checkpoint_without_a_log_mark_beyond_the_log_is_read_from_its_start(traversable_dir, caplog):
    with EmbeddedBroker(traversable_dir / "a") as broker:
        create_topic(broker.bootstrap_servers)
        produce(broker.bootstrap_servers, 0, 3)
        produce(broker.bootstrap_servers, 1, 2)
        reader = reader_for(broker.bootstrap_servers, traversable_dir / "journal")
        old = {TOPIC: {"0": 50, "1": 1}}  # written before the mark: no cluster id to compare
        with caplog.at_level(logging.WARNING, logger="pinpipe"):
            end = reader.latestOffset(old, ReadAllAvailable())
        assert end == {
            TOPIC: {"0": 3, "1": 2}, "@log": {"cluster": broker.cluster_id, "from": {TOPIC: {"0": 0}}},
        }  # fmt: skip
        assert reader.partitions(old, end) == [
            KafkaInputPartition((KafkaPartitionRange(TOPIC, 0, 0, 3),), broker.cluster_id),
            KafkaInputPartition((KafkaPartitionRange(TOPIC, 1, 1, 2),), broker.cluster_id),
        ]
        reader.stop()
    warning = next(r.getMessage() for r in caplog.records if "log restarted" in r.getMessage())
    assert "ends below" in warning and f"{TOPIC}[0] from offset 50 (the old log's end was not seen)" in warning
