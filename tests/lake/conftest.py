"""Factories for the lake tests: unique topics and groups on the shared broker, producing,
reading the lake back, running the sink in a thread or as a killable process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pinpipe.config import Settings, load_settings
from pinpipe.events import topic_name
from pinpipe.lake.layout import parse_file_name
from pinpipe.lake.sink import SinkStats, run_sink
from pinpipe.services.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[2]  # the checkout: `python -m tests.lake...` works
SESSION_TIMEOUT_MS = 2000  # Tansu joins a group in ~1 s with this, ~23 s with the default


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class LakeEnv:
    """One test's slice of the shared broker: its own topic prefix, group and lake."""

    bootstrap: str
    data_dir: Path
    prefix: str
    group: str
    lake: dict = field(default_factory=dict)

    def settings(self, **lake: object) -> Settings:
        options = {"sink_group_id": self.group, "session_timeout_ms": SESSION_TIMEOUT_MS,
                   **self.lake, **lake}  # fmt: skip
        broker = {"bootstrap_servers": self.bootstrap, "topic_prefix": self.prefix}
        return load_settings(data_dir=self.data_dir, broker=broker, lake=options)

    def topic(self, table: str) -> str:
        return topic_name(self.prefix, table)

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    def create_topics(self, partitions: int = 3) -> None:
        from pinpipe.events import all_topics

        ensure_topics({"bootstrap.servers": self.bootstrap}, all_topics(self.prefix), partitions)

    def produce(self, topic: str, values: list[bytes], partition: int | None = None,
                timestamps: list[int] | None = None) -> list[tuple[int, int, bytes]]:
        """Produce and wait for acks; returns (partition, offset, value) of each record."""
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5,
                             "enable.idempotence": True})  # fmt: skip
        delivered: list[tuple[int, int, bytes]] = []
        failures: list[object] = []

        def on_delivery(error, message) -> None:
            if error is not None:
                failures.append(error)
            else:
                delivered.append((message.partition(), message.offset(), message.value()))

        for index, value in enumerate(values):
            kwargs = {} if partition is None else {"partition": partition}
            if timestamps is not None:
                kwargs["timestamp"] = timestamps[index]
            key = f"k{index % 97}".encode()
            while True:
                try:
                    producer.produce(topic, value=value, key=key, on_delivery=on_delivery, **kwargs)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        assert producer.flush(30) == 0
        assert not failures, failures
        return delivered

    def run_in_thread(self, settings: Settings) -> SinkThread:
        return SinkThread(settings, self.bootstrap)

    def sink_process(self, *extra: str, env: dict | None = None, log_name: str = "sink.log",
                     module: str = "pinpipe.lake") -> subprocess.Popen:
        """``python -m pinpipe.lake`` for this env (its stdout/stderr go to a log file)."""
        command = [sys.executable, "-m", module, "--bootstrap", self.bootstrap,
                   "--data-dir", str(self.data_dir), "--topic-prefix", self.prefix,
                   "--group", self.group, "--session-timeout-ms", str(SESSION_TIMEOUT_MS),
                   *extra]  # fmt: skip
        log = open(self.data_dir / log_name, "ab")
        try:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                    env={**os.environ, **(env or {})})  # fmt: skip
        finally:
            log.close()


class SinkThread:
    """``run_sink`` in a thread, stopped through its stop event."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.stop_event = threading.Event()
        self.stats: SinkStats | None = None
        self.error: BaseException | None = None

        def target() -> None:
            try:
                self.stats = run_sink(settings, bootstrap, self.stop_event)
            except BaseException as exc:  # reported by stop()
                self.error = exc

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 30) -> SinkStats:
        self.stop_event.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the sink did not stop"
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats


def raw_files(root: Path) -> list[Path]:
    """The lake's raw files as a reader would list them (temporary files excluded)."""
    return sorted(p for p in root.glob("raw/*/dt=*/*.parquet") if parse_file_name(str(p)))


def read_lake(root: Path) -> list[dict]:
    """Every row of every raw file, with the file's path."""
    rows = []
    for path in raw_files(root):
        for row in pq.read_table(path).to_pylist():
            row["file"] = path
            rows.append(row)
    return rows


@pytest.fixture
def lake_env(kafka_bootstrap: str, tmp_path: Path) -> Iterator[LakeEnv]:
    unique = uuid.uuid4().hex[:8]
    yield LakeEnv(kafka_bootstrap, tmp_path, prefix=f"lk{unique}", group=f"lake-{unique}")
