"""The broker dies under the sink and comes back with an empty log (memory storage).

Each test runs its own broker (the session's must not die). What the sink had fetched is
written out; the new log's files never replace the old log's; what the old log held beyond the
lake is reported, in the log, the metrics and the lake's ledger."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from pinpipe.lake import verify_lake
from pinpipe.lake.layout import parse_file_name
from pinpipe.lake.logs import LogLedger
from pinpipe.lake.storage import LakeStorage
from pinpipe.services.broker import EmbeddedBroker
from tests.lake.conftest import LakeEnv, raw_files, read_lake, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def own_broker(tmp_path: Path):
    broker = EmbeddedBroker(tmp_path / "broker-logs")
    broker.start()
    yield broker
    broker.stop()


def restart_empty(broker: EmbeddedBroker) -> str:
    """SIGKILL the broker, start a new one (new cluster id) on the same port; its cluster id."""
    old = broker.cluster_id
    os.kill(broker.pid, signal.SIGKILL)
    broker.stop()  # reaps it
    broker.requested_port = broker.port
    broker.cluster_id = f"{old}-next"
    broker.start()
    return broker.cluster_id


def values(prefix: str, n: int) -> list[bytes]:
    return [f'{{"{prefix}": {i}}}'.encode() for i in range(n)]


def test_fetched_records_are_written_and_the_new_log_gets_new_files(own_broker, tmp_path) -> None:
    env = LakeEnv(own_broker.bootstrap_servers, tmp_path, prefix="lr", group="lake-lr")
    env.create_topics(partitions=1)
    topic = env.topic("pin")
    first = values("old", 40)
    env.produce(topic, first, partition=0)
    # A 10-minute rotation: without the write-out on broker loss, nothing would reach the lake.
    sink = env.run_in_thread(env.settings(rotate_age_s=600))
    storage = LakeStorage.from_settings(env.settings())
    wait_for(lambda: LogLedger(storage).logs(), 30, "the sink to record the first log")
    # The fetch response that told the sink the end (40) carried the 40 records.
    wait_for(lambda: seen_end(env, own_broker, topic) == 40, 30, "the sink to fetch all 40 records")

    restart_empty(own_broker)
    wait_for(lambda: len(read_lake(env.lake_dir)) == 40, 60, "the fetched records written out")
    second = values("new", 25)
    wait_for(lambda: LogLedger(storage).logs()[-1].cluster_id == own_broker.cluster_id, 30,
             "the sink to enter the new log (and create its topics)")  # fmt: skip
    env.produce(topic, second, partition=0)
    wait_for(lambda: seen_end(env, own_broker, topic) == 25, 60, "the sink to fetch the new log")
    stats = sink.stop()  # writes the new log's 25 records

    rows = read_lake(env.lake_dir)
    assert sorted(row["value"].encode() for row in rows) == sorted(first + second)
    generations = {(parse_file_name(str(row["file"])).generation, row["offset"]) for row in rows}
    assert generations == {(0, o) for o in range(40)} | {(1, o) for o in range(25)}
    names = sorted(path.name for path in raw_files(env.lake_dir))
    assert names == [f"{topic}+0+{0:020d}+1.parquet", f"{topic}+0+{0:020d}.parquet"]
    ledger = LogLedger(storage)
    assert [log.generation for log in ledger.logs()] == [0, 1]
    assert ledger.losses() == [] and stats.lost == []
    # The new log is read in a group of its own (lake-lr.log1), where the sink committed its end.
    report = verify_lake(env.settings(), own_broker.bootstrap_servers)
    assert report.ok, [check for check in report.checks if not check.ok]
    assert {(c.topic, c.generation): c.committed for c in report.checks if c.topic == topic} == {
        (topic, 0): None, (topic, 1): 25}


def seen_end(env: LakeEnv, broker: EmbeddedBroker, topic: str) -> int | None:
    ledger = LogLedger(LakeStorage.from_settings(env.settings()))
    return ledger.seen(broker.cluster_id).get((topic, 0))


def publish(env: LakeEnv, topic: str, records: list[bytes], broker: EmbeddedBroker) -> None:
    """Through the ingest API's publisher, which records what it got acknowledged in the ledger."""
    import asyncio

    from pinpipe.ingest.delivery import Message
    from pinpipe.ingest.publisher import Publisher
    from pinpipe.lake.logs import ack_recorder

    publisher = Publisher({"bootstrap.servers": env.bootstrap}, on_acked=ack_recorder(env.settings()))
    publisher.start()
    try:
        deliveries = asyncio.run(publisher.publish([Message(topic, v, b"k") for v in records]))
        end = deliveries[-1].offset + 1
        wait_for(lambda: seen_end(env, broker, topic) == end, 20, "the acknowledgements recorded")
    finally:
        publisher.close()


def test_records_no_sink_fetched_are_reported_lost(own_broker, tmp_path) -> None:
    env = LakeEnv(own_broker.bootstrap_servers, tmp_path, prefix="ll", group="lake-ll")
    env.create_topics(partitions=1)
    topic = env.topic("geo")
    publish(env, topic, values("kept", 30), own_broker)
    sink = env.run_in_thread(env.settings(rotate_records=30))
    wait_for(lambda: len(read_lake(env.lake_dir)) == 30, 30, "the first 30 records written")
    sink.stop()
    # Acknowledged while no sink ran, then gone with the broker: only the API knew of them.
    publish(env, topic, values("gone", 12), own_broker)
    cluster = restart_empty(own_broker)
    env.create_topics(partitions=1)

    sink = env.run_in_thread(env.settings(rotate_age_s=600))
    storage = LakeStorage.from_settings(env.settings())
    wait_for(lambda: LogLedger(storage).losses(), 40, "the loss to be recorded")
    stats = sink.stop()
    (lost,) = LogLedger(storage).losses()
    assert (lost.topic, lost.partition, lost.first, lost.end, lost.generation) == (topic, 0, 30, 42, 0)
    assert lost.records == 12 and stats.lost == [lost]
    assert [log.cluster_id for log in LogLedger(storage).logs()][-1] == cluster
    report = verify_lake(env.settings(), own_broker.bootstrap_servers)
    problems = [problem for check in report.checks for problem in check.problems]
    assert problems == ["12 acknowledged records lost with log 0 (offsets 30..41; reported)"]


def test_a_broker_paused_for_30_s_is_waited_for(own_broker, tmp_path) -> None:
    """A stall is not a crash: the sink neither stops nor loses or repeats a record."""
    env = LakeEnv(own_broker.bootstrap_servers, tmp_path, prefix="lp", group="lake-lp")
    env.create_topics(partitions=2)
    topic = env.topic("user")
    env.produce(topic, values("before", 50))
    sink = env.run_in_thread(env.settings(rotate_records=10, rotate_age_s=1))
    wait_for(lambda: len(read_lake(env.lake_dir)) == 50, 30, "the first records written")
    os.kill(own_broker.pid, signal.SIGSTOP)
    try:
        time.sleep(30)  # the fault itself lasts 30 s; what follows waits on conditions
    finally:
        os.kill(own_broker.pid, signal.SIGCONT)
    env.produce(topic, values("after", 50))
    wait_for(lambda: len(read_lake(env.lake_dir)) >= 100, 90, "the records after the pause")
    assert sink.thread.is_alive() and sink.error is None
    sink.stop()
    rows = read_lake(env.lake_dir)
    assert sorted(row["value"].encode() for row in rows) == sorted(values("before", 50) + values("after", 50))
    assert verify_lake(env.settings(), own_broker.bootstrap_servers).ok
