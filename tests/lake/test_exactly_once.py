"""Exactly once under failure: the sink as a real process, SIGKILLed at random points.

Each test produces records with distinct values, runs ``python -m pinpipe.lake`` and kills it
with SIGKILL at random moments while it writes, restarts it, finally lets it drain and stop
with SIGTERM, then checks that the lake holds every produced (topic, partition, offset) exactly
once with byte-identical values. The S3 variant writes to a moto server, which stands in for
S3 (a cloud service) on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from pinpipe.lake import LakeStorage, verify_lake
from pinpipe.lake.inventory import committed_offsets
from pinpipe.lake.layout import parse_file_name
from tests.lake.conftest import LakeEnv, read_lake, wait_for

pytestmark = pytest.mark.integration

SLOW_COMMIT_SINK = "tests.lake.slow_commit_sink"

ROTATION = ("--rotate-records", "400", "--rotate-age-s", "0.3")
# Small files and a small memory cap: many file ends are time-dependent (memory pressure, age),
# the case where a re-written file may cover a different range than the one it replaces.
KILL_ROTATION = ("--rotate-records", "500", "--rotate-age-s", "0.2", "--max-buffer-bytes", "400000")


def lake_records(storage: LakeStorage) -> Counter:
    """(topic, partition, offset, value bytes) of every row in the lake, counted."""
    rows: Counter = Counter()
    for stored in storage.list_files("raw"):
        parsed = parse_file_name(stored.path)
        if parsed is None:
            continue
        table = storage.read_columns(stored.path, ["topic", "partition", "offset", "value"])
        for row in table.to_pylist():
            rows[(row["topic"], row["partition"], row["offset"], row["value"].encode())] += 1
    return rows


def file_count(storage: LakeStorage) -> int:
    return sum(1 for s in storage.list_files("raw") if parse_file_name(s.path))


def produce_wave(env: LakeEnv, wave: int, count: int) -> list[tuple[str, int, int, bytes]]:
    produced = []
    for table in ("pin", "geo", "dlq"):
        topic = env.topic(table)
        values = [f'{{"wave": {wave}, "n": {n}, "t": "{table} \u2603 {uuid.uuid4()}"}}'.encode()
                  for n in range(count)]  # fmt: skip
        produced += [(topic, p, o, v) for p, o, v in env.produce(topic, values)]
    return produced


def all_committed(env: LakeEnv, produced) -> bool:
    expected: Counter = Counter((topic, partition) for topic, partition, _, _ in produced)
    settings = env.settings()
    committed = committed_offsets(settings, env.bootstrap, sorted({t for t, _ in expected}))
    return all(committed.get(key, 0) >= count for key, count in expected.items())


def stop(process: subprocess.Popen, timeout: float = 30) -> dict:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout) == 0, "the sink did not exit cleanly"
    return {}


def kill_and_restart(env: LakeEnv, storage: LakeStorage, rng: random.Random, extra: tuple,
                     kills: int, wave_size: int, env_vars: dict | None = None):
    """Produce a wave, start the sink, SIGKILL it once it writes, ``kills`` times; drain."""
    produced = []
    interrupted = 0
    for wave in range(kills):
        produced += produce_wave(env, wave, wave_size)
        before = file_count(storage)
        process = env.sink_process(*extra, env=env_vars, module=SLOW_COMMIT_SINK)
        wait_for(lambda: file_count(storage) > before or process.poll() is not None, 60,
                 "the sink to write a file")  # fmt: skip
        assert process.poll() is None, (env.data_dir / "sink.log").read_text()
        time.sleep(rng.uniform(0, 0.4))  # a random point in the middle of writing
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        interrupted += not all_committed(env, produced)
    # At least one kill must have hit the sink with work in flight, or the test proves nothing.
    assert interrupted, "every kill came after the sink had drained: raise wave_size"
    produced += produce_wave(env, kills, wave_size)
    process = env.sink_process(*extra, env=env_vars)
    wait_for(lambda: all_committed(env, produced), 90, "the sink to commit every record", 0.5)
    stop(process)
    return produced


def assert_exactly_once(storage: LakeStorage, produced) -> None:
    stored = lake_records(storage)
    duplicates = {key: count for key, count in stored.items() if count > 1}
    assert not duplicates, f"{len(duplicates)} records stored more than once"
    assert set(stored) == set(produced)  # same coordinates, byte-identical values
    assert len(stored) == len(produced)


def test_exactly_once_when_killed_local(lake_env: LakeEnv) -> None:
    lake_env.create_topics(partitions=3)
    settings = lake_env.settings()
    storage = LakeStorage.from_settings(settings)
    rng = random.Random(int.from_bytes(os.urandom(4)))
    produced = kill_and_restart(lake_env, storage, rng, KILL_ROTATION, kills=3, wave_size=15000)
    assert_exactly_once(storage, produced)
    replaced = (lake_env.data_dir / "sink.log").read_text().count("lake sink: replaced")
    print(f"files re-written after a kill: {replaced}")
    report = verify_lake(settings, lake_env.bootstrap)
    assert report.ok, [c for c in report.checks if not c.ok]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback (stands in for S3); skipped if moto is not installed."""
    pytest.importorskip("moto.server", reason="pip install 'moto[server]>=5' for the S3 tests")
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        def accepting() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for(accepting, 30, "the moto server")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


S3_CREDENTIALS = {"PINPIPE_LAKE__S3_ACCESS_KEY_ID": "testing",
                  "PINPIPE_LAKE__S3_SECRET_ACCESS_KEY": "testing",
                  "PINPIPE_LAKE__S3_REGION": "us-east-1"}  # fmt: skip


def test_exactly_once_when_killed_s3(lake_env: LakeEnv, moto_endpoint: str, monkeypatch) -> None:
    import pyarrow.fs as pafs

    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    filesystem = pafs.S3FileSystem(endpoint_override=moto_endpoint.removeprefix("http://"),
                                   scheme="http", access_key="testing", secret_key="testing",
                                   region="us-east-1", allow_bucket_creation=True)  # fmt: skip
    filesystem.create_dir(bucket)
    root = f"s3://{bucket}/pinpipe"
    lake_env.lake = {"root": root, "s3_endpoint_url": moto_endpoint}
    lake_env.create_topics(partitions=3)
    settings = lake_env.settings()
    storage = LakeStorage.from_settings(settings)
    rng = random.Random(int.from_bytes(os.urandom(4)))
    extra = (*KILL_ROTATION, "--root", root, "--s3-endpoint-url", moto_endpoint)
    produced = kill_and_restart(lake_env, storage, rng, extra, kills=2, wave_size=6000)
    assert_exactly_once(storage, produced)
    assert verify_lake(settings, lake_env.bootstrap).ok


def test_rebalance_between_two_sinks(lake_env: LakeEnv) -> None:
    lake_env.create_topics(partitions=3)
    settings = lake_env.settings()
    storage = LakeStorage.from_settings(settings)
    produced = produce_wave(lake_env, 0, 2000)
    first = lake_env.sink_process(*ROTATION, log_name="first.log")
    second = lake_env.sink_process(*ROTATION, log_name="second.log")

    def both_assigned() -> bool:
        logs = [(lake_env.data_dir / name).read_text() for name in ("first.log", "second.log")]
        return all("assigned [(" in log for log in logs)

    wait_for(both_assigned, 60, "both sinks to own partitions")
    produced += produce_wave(lake_env, 1, 2000)
    wait_for(lambda: all_committed(lake_env, produced), 90, "both sinks to commit", 0.5)
    # The second leaves: the first takes over its partitions (a rebalance), and keeps going.
    stop(second)
    produced += produce_wave(lake_env, 2, 2000)
    wait_for(lambda: all_committed(lake_env, produced), 90, "the first sink to take over", 0.5)
    stop(first)
    for name in ("first.log", "second.log"):
        stats = json.loads((lake_env.data_dir / name).read_text().strip().splitlines()[-1])
        assert stats["records"] > 0, f"{name} wrote nothing"
    assert_exactly_once(storage, produced)


def test_verify_while_the_sink_writes_and_commits_finds_nothing_wrong(lake_env: LakeEnv) -> None:
    """A lake checked while the sink cuts a file and commits every few records: every check
    agrees (a committed offset read after the lake was listed looked like lost records)."""
    import threading

    lake_env.create_topics(partitions=1)
    settings = lake_env.settings(rotate_records=20, rotate_age_s=0.05)
    topic = lake_env.topic("pin")
    stop = threading.Event()

    def keep_producing() -> None:
        n = 0
        while not stop.is_set():
            lake_env.produce(topic, [f'{{"n": {n + i}}}'.encode() for i in range(20)], partition=0)
            n += 20

    sink = lake_env.run_in_thread(settings)
    producer = threading.Thread(target=keep_producing, daemon=True)
    producer.start()
    reports = []
    try:
        wait_for(lambda: read_lake(lake_env.lake_dir), 60, "the sink's first file")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            reports.append(verify_lake(settings, lake_env.bootstrap))
    finally:
        stop.set()
        producer.join(30)
        sink.stop()
    wrong = [c for report in reports for c in report.checks if not c.ok]
    assert len(reports) >= 10 and not wrong, (len(reports), wrong[:3])
    assert reports[-1].checks[0].committed > reports[0].checks[0].committed  # it did commit meanwhile
