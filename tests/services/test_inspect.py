"""`pinpipe topics` and `pinpipe tail` against the embedded broker: known records, read back.

The shared topic is written once per module and only read; tests that write use a topic of
their own. Its partitions end with batches of several records: Tansu's ListOffsets answers the
last batch's base offset + 1 there (measured: 4 for partition 0, which ends at 43).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from typer.testing import CliRunner

import pinpipe
from pinpipe.cli import app
from pinpipe.processes import process_cmdline
from pinpipe.services.inspect import (
    INSPECT_GROUP,
    GroupPartitionLag,
    PartitionOffsets,
    Tail,
    UnknownTopicError,
    list_partitions,
    overview,
)
from pinpipe.services.state import ServiceRecord, write_record
from pinpipe.services.topics import ensure_topics

pytestmark = pytest.mark.integration

BASE_MS = 1_714_564_800_000  # 2024-05-01T12:00:00Z
REASON = "latitude: Input should be less than or equal to 90"


def new_topic(bootstrap: str, partitions: int, prefix: str = "inspect") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    ensure_topics({"bootstrap.servers": bootstrap}, [name], partitions)
    return name


def produce(bootstrap: str, topic: str, records: list[dict], flush_each: bool = False) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for record in records:
        producer.produce(topic, **record)
        if flush_each:
            assert producer.flush(10) == 0
    assert producer.flush(10) == 0


@pytest.fixture(scope="module")
def filled(kafka_bootstrap) -> str:
    """3 partitions: 0 holds k0..k42, 1 a dead letter and a binary record, 2 nothing."""
    topic = new_topic(kafka_bootstrap, 3)
    batch = [
        {"partition": 0, "key": f"k{i}", "value": f"v{i}", "headers": [("n", str(i))],
         "timestamp": BASE_MS + i}
        for i in range(43)
    ]  # fmt: skip
    produce(kafka_bootstrap, topic, batch[:3], flush_each=True)
    produce(kafka_bootstrap, topic, batch[3:])
    produce(kafka_bootstrap, topic, [
        {"partition": 1, "key": None, "value": b'{"table":"geo"}', "timestamp": BASE_MS,
         "headers": [("pinpipe-reason", REASON.encode()), ("pinpipe-source", b"rest-proxy")]},
        {"partition": 1, "key": b"bin", "value": b"\xff\x00", "timestamp": BASE_MS + 1500,
         "headers": [("empty", None)]},
    ])  # fmt: skip
    return topic


@pytest.fixture
def config(kafka_bootstrap) -> dict[str, str]:
    return {"bootstrap.servers": kafka_bootstrap}


@pytest.fixture
def cli(kafka_bootstrap, tmp_path):
    """Runs ``pinpipe ARGS`` in-process against the test broker."""
    env = {"PINPIPE_BROKER__BOOTSTRAP_SERVERS": kafka_bootstrap, "PINPIPE_DATA_DIR": str(tmp_path),
           "PINPIPE_CONFIG": None}  # fmt: skip

    def run(*args: str):
        return CliRunner().invoke(app, list(args), env=env)

    return run


# --- topics ---------------------------------------------------------------------------------


def test_every_partition_is_counted_to_its_real_end(config, filled):
    (topic,) = [t for t in overview(config).topics if t.name == filled]
    assert topic.partitions == (
        PartitionOffsets(filled, 0, 0, 43),
        PartitionOffsets(filled, 1, 0, 2),
        PartitionOffsets(filled, 2, 0, 0),
    )
    assert (topic.end, topic.records) == (45, 45)


def test_a_group_lag_is_its_committed_offset_against_the_end(config, filled):
    group = f"inspect-group-{uuid.uuid4().hex[:8]}"
    committer = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    try:  # a commit without joining: the group holds these offsets and has no member
        committer.commit(offsets=[TopicPartition(filled, 0, 10), TopicPartition(filled, 1, 2)],
                         asynchronous=False)  # fmt: skip
    finally:
        committer.close()

    with Tail(config, filled) as tail:  # reading must not touch any group
        assert len(list(tail.records())) == 45
    found = {g.group_id: g for g in overview(config).groups}
    assert found[group].partitions == (
        GroupPartitionLag(filled, 0, 10, 43),
        GroupPartitionLag(filled, 1, 2, 2),
    )
    assert [p.lag for p in found[group].partitions] == [33, 0]
    assert found[group].lag == 33
    assert INSPECT_GROUP not in found


def test_internal_topics_are_hidden_unless_asked_for(kafka_bootstrap, config, cli):
    internal = new_topic(kafka_bootstrap, 1, prefix="__inspect")
    produce(kafka_bootstrap, internal, [{"value": b"x"}])
    assert internal not in {t.name for t in overview(config).topics}
    shown = [t for t in overview(config, include_internal=True).topics if t.name == internal]
    assert [(t.end, t.records) for t in shown] == [(1, 1)]

    hidden = cli("topics", "--json")
    assert hidden.exit_code == 0, hidden.output
    assert internal not in {t["name"] for t in json.loads(hidden.stdout)["topics"]}
    everything = cli("topics", "--all", "--json")
    assert everything.exit_code == 0, everything.output
    (listed,) = [t for t in json.loads(everything.stdout)["topics"] if t["name"] == internal]
    assert listed == {"name": internal, "end": 1, "records": 1,
                      "partitions": [{"partition": 0, "start": 0, "end": 1, "records": 1}]}


def test_topics_prints_each_partition_and_the_total(cli, filled):
    result = cli("topics")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines]
    assert [row for row in cells if row[:1] == [filled]] == [
        [filled, "0", "0", "43", "43"],
        [filled, "1", "0", "2", "2"],
        [filled, "2", "0", "0", "0"],
        [filled, "total", "", "45", "45"],
    ]


# --- tail -----------------------------------------------------------------------------------


def test_tail_reads_every_record_with_its_coordinates(config, filled):
    with Tail(config, filled) as tail:
        records = list(tail.records())
    by_partition = {p: [r for r in records if r.partition == p] for p in (0, 1, 2)}
    assert [r.offset for r in by_partition[0]] == list(range(43))
    assert [r.key for r in by_partition[0]][-2:] == [b"k41", b"k42"]
    assert by_partition[0][0].timestamp == "2024-05-01T12:00:00Z"
    assert by_partition[0][42].timestamp == "2024-05-01T12:00:00.042000Z"
    assert by_partition[0][42].headers == (("n", b"42"),)
    assert by_partition[2] == []

    dead, binary = by_partition[1]
    assert (dead.offset, dead.key, dead.value) == (0, None, b'{"table":"geo"}')
    assert dead.header("pinpipe-reason") == REASON
    assert dead.header("pinpipe-source") == "rest-proxy"
    assert binary.as_dict() == {
        "topic": filled, "partition": 1, "offset": 1, "timestamp": "2024-05-01T12:00:01.500000Z",
        "key": "bin", "key_encoding": "utf-8", "headers": [["empty", None]],
        "value": "/wA=", "value_encoding": "base64",
    }  # fmt: skip


def test_tail_count_and_partition(config, filled):
    with Tail(config, filled) as tail:
        assert len(list(tail.records(count=5))) == 5
    with Tail(config, filled, partition=1) as tail:
        assert [(r.partition, r.offset) for r in tail.records(count=1)] == [(1, 0)]
    with Tail(config, filled, partition=2) as tail:
        assert list(tail.records()) == []
    with pytest.raises(UnknownTopicError, match="no partition 3"):
        with Tail(config, filled, partition=3):
            pass


def test_tail_from_the_end_shows_only_what_comes_after(kafka_bootstrap, config, filled):
    # A consumer told to start at OFFSET_END would start at Tansu's stale end and show old ones.
    with Tail(config, filled, from_end=True) as tail:
        assert tail.start_offsets == {0: 43, 1: 2, 2: 0}
        assert list(tail.records()) == []

    topic = new_topic(kafka_bootstrap, 2)
    produce(kafka_bootstrap, topic, [{"partition": 0, "value": f"old{i}"} for i in range(30)])
    with Tail(config, topic, from_end=True) as tail:
        produce(kafka_bootstrap, topic, [{"partition": 1, "value": b"new", "key": b"k"}])
        assert [(r.partition, r.offset, r.value) for r in tail.records(count=1, follow=True)] == [
            (1, 0, b"new")
        ]


def test_tail_prints_records_as_text_and_json(cli, filled):
    text = cli("tail", filled, "--partition", "0", "-n", "2")
    assert text.exit_code == 0, text.output
    assert text.stdout == (
        f"{filled} partition 0 offset 0 at 2024-05-01T12:00:00Z key k0\n"
        "  header n: 0\n"
        "  value v0\n"
        f"{filled} partition 0 offset 1 at 2024-05-01T12:00:00.001000Z key k1\n"
        "  header n: 1\n"
        "  value v1\n"
    )
    lines = cli("tail", filled, "--partition", "1", "--json").stdout.splitlines()
    assert [json.loads(line) for line in lines][0] == {
        "topic": filled, "partition": 1, "offset": 0, "timestamp": "2024-05-01T12:00:00Z",
        "key": None, "key_encoding": None,
        "headers": [["pinpipe-reason", REASON], ["pinpipe-source", "rest-proxy"]],
        "value": '{"table":"geo"}', "value_encoding": "utf-8",
    }  # fmt: skip
    assert len(lines) == 2
    assert cli("tail", filled, "--from-end").stdout == ""


def test_an_unknown_topic_is_an_error_and_is_not_created(config, cli):
    missing = f"inspect-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(UnknownTopicError, match=missing):
        with Tail(config, missing):
            pass
    result = cli("tail", missing)
    assert result.exit_code == 1
    assert f"no topic '{missing}'" in result.stderr
    assert "Traceback" not in result.output
    assert missing not in list_partitions(config)


def test_the_running_embedded_broker_is_found_through_its_record(kafka_bootstrap, filled, tmp_path):
    # The record `pinpipe services up` leaves, here for the session's broker.
    listens = f"--listener-url tcp://{kafka_bootstrap} "
    (pid,) = [int(entry.name) for entry in Path("/proc").iterdir()
              if entry.name.isdigit() and listens in process_cmdline(int(entry.name))]  # fmt: skip
    write_record(tmp_path / "run", ServiceRecord.now("broker", pid, kafka_bootstrap))
    env = {"PINPIPE_BROKER__BOOTSTRAP_SERVERS": None, "PINPIPE_DATA_DIR": str(tmp_path),
           "PINPIPE_CONFIG": None}  # fmt: skip
    result = CliRunner().invoke(app, ["tail", filled, "--partition", "1", "-n", "1"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{filled} partition 1 offset 0 at ")


def test_no_broker_configured_or_running_is_said_plainly(tmp_path):
    env = {"PINPIPE_BROKER__BOOTSTRAP_SERVERS": None, "PINPIPE_DATA_DIR": str(tmp_path),
           "PINPIPE_CONFIG": None}  # fmt: skip
    for args in (["topics"], ["tail", "pinpipe.dlq"]):
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 1
        assert "no broker to look at" in result.stderr
        assert "Traceback" not in result.output


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def _wait_for(lines: queue.Queue, wanted: str, deadline: float) -> list[str]:
    """Lines up to and including the first that contains ``wanted``; fails at the deadline."""
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            pytest.fail(f"no {wanted!r} before the deadline; saw {seen}")
        if line is None:
            pytest.fail(f"stream ended without {wanted!r}; saw {seen}")
        seen.append(line)
        if wanted in line:
            return seen


def _rest(lines: queue.Queue, deadline: float) -> list[str]:
    """The lines left once the process has ended (its stream closes)."""
    rest: list[str] = []
    while (line := lines.get(timeout=max(deadline - time.monotonic(), 0.01))) is not None:
        rest.append(line)
    return rest


def test_tail_follow_prints_new_records_until_ctrl_c(kafka_bootstrap, tmp_path):
    topic = new_topic(kafka_bootstrap, 2)
    produce(kafka_bootstrap, topic, [{"partition": 0, "value": b"before"}])
    src = Path(pinpipe.__file__).resolve().parents[1]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PINPIPE_")},
           "PINPIPE_BROKER__BOOTSTRAP_SERVERS": kafka_bootstrap, "PINPIPE_DATA_DIR": str(tmp_path),
           "PYTHONPATH": str(src)}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "pinpipe.cli", "tail", topic, "--follow", "--from-end"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    out: queue.Queue = queue.Queue()
    err: queue.Queue = queue.Queue()
    for stream, into in ((process.stdout, out), (process.stderr, err)):
        threading.Thread(target=_lines, args=(stream, into), daemon=True).start()
    try:
        deadline = time.monotonic() + 20
        _wait_for(err, f"following {topic}", deadline)  # placed at the end: now produce
        produce(kafka_bootstrap, topic, [{"partition": 1, "key": b"k", "value": b"after"}])
        printed = _wait_for(out, "value after", deadline)
        assert printed[0].startswith(f"{topic} partition 1 offset 0 at ")
        assert "before" not in "".join(printed)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert "Traceback" not in "".join(_rest(err, deadline))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
