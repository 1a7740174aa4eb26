"""Broker faults under a running stream job (a real ``python -m pinpipe.speed`` process):
a broker paused for 30 s, and a broker killed and replaced by an empty one on the same port.

Each test starts its own :class:`EmbeddedBroker` (it is paused or killed); the session's
PostgreSQL and a fresh database hold what the job writes. The expected keys are the ones the
test produced, counted by the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pinpipe.events import Table, record_key, topic_name
from pinpipe.services.broker import EmbeddedBroker, free_port
from pinpipe.speed.health import stream_health
from tests.conftest import checkout_env
from tests.speed.conftest import create_topics, stored_value
from tests.speed.pg import query, wait_for
from tests.speed.records import user

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

@pytest.fixture
def broker(traversable_dir: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test only, on a fixed port (a replacement can take the same one)."""
    server = EmbeddedBroker(traversable_dir / "broker", port=free_port())
    server.start()
    yield server
    if server.pid is not None:
        try:
            os.kill(server.pid, signal.SIGCONT)  # a test failing mid-pause leaves it stopped
        except ProcessLookupError:
            pass
    server.stop()


def start_job(
    bootstrap: str, dsn: str, prefix: str, workdir: Path, metrics_port: int, **settings: str
) -> subprocess.Popen:
    env = checkout_env(**{
        **{f"PINPIPE_SPEED__{name.upper()}": value for name, value in settings.items()},
        "PINPIPE_DATA_DIR": str(workdir),
        "PINPIPE_BROKER__BOOTSTRAP_SERVERS": bootstrap,
        "PINPIPE_BROKER__TOPIC_PREFIX": prefix,
        "PINPIPE_POSTGRES__DSN": dsn,
        "PINPIPE_BATCH__DRIVER_MEMORY": "1g",
        "PINPIPE_BATCH__SHUFFLE_PARTITIONS": "2",
        "PINPIPE_SPEED__WARMUP_ROWS": "0",  # what it writes counts here, not how fast it starts
        "PINPIPE_SPEED__DELTA_OUTPUT": "false",
    })
    log = open(workdir / "stream.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "pinpipe.speed", "--trigger-s", "0.5",
         "--checkpoint-dir", str(workdir / "checkpoint"), "--metrics-port", str(metrics_port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=workdir,
    )  # fmt: skip


def stop_job(job: subprocess.Popen) -> None:
    try:
        os.killpg(job.pid, signal.SIGTERM)
        job.wait(timeout=60)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)


def stream_log(workdir: Path) -> str:
    return (workdir / "stream.log").read_text(errors="replace")


def log_excerpt(workdir: Path) -> str:
    """The job log's error and warning lines and its last lines (a query plan can be long)."""
    lines = stream_log(workdir).splitlines()
    marked = [line for line in lines if any(w in line for w in ("Error", "Exception", "WARNING", "lost"))]
    return "\n".join(marked[-40:] + ["..."] + [line[:300] for line in lines[-30:]])


def users_stored(dsn: str) -> set[int]:
    try:
        return {row["ind"] for row in query(dsn, 'SELECT ind FROM pinpipe."user"')}
    except Exception:  # noqa: BLE001 - the schema is not migrated yet
        return set()


def records_committed(dsn: str) -> int:
    return query(dsn, "SELECT coalesce(sum(records), 0)::int AS n FROM pinpipe.stream_batch")[0]["n"]


def metrics_text(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return ""


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the metrics ``text`` (None when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


class UserProducer:
    """Produces user records ``ind`` = first, first + 1, ... (idempotent, acks=all)."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        from confluent_kafka import Producer

        self.topic = topic_name(prefix, Table.USER)
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
            "linger.ms": 5, "request.timeout.ms": 120_000, "message.timeout.ms": 180_000,
        })  # fmt: skip
        self.acked: set[int] = set()
        self.failed: list[str] = []

    def send(self, keys: range) -> None:
        for ind in keys:
            record = user(ind)
            self.producer.produce(self.topic, value=stored_value(record), key=record_key(Table.USER, record),
                                  on_delivery=lambda err, _msg, ind=ind: self._delivered(ind, err))
            self.producer.poll(0)

    def _delivered(self, ind: int, error: object) -> None:
        if error is None:
            self.acked.add(ind)
        else:
            self.failed.append(f"{ind}: {error}")

    def flush(self, timeout_s: float = 150) -> None:
        assert self.producer.flush(timeout_s) == 0, "records not delivered"
        assert not self.failed, self.failed[:5]


def wait_job(condition, job: subprocess.Popen, workdir: Path, timeout_s: float, what: str) -> None:
    def check() -> bool:
        assert job.poll() is None, f"the stream job exited ({job.returncode}):\n{log_excerpt(workdir)}"
        return condition()

    try:
        wait_for(check, timeout_s=timeout_s, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{log_excerpt(workdir)}") from None


def test_a_paused_broker_makes_the_job_wait_not_exit(broker, fresh_dsn, topic_prefix, traversable_dir):
    create_topics(broker.bootstrap_servers, topic_prefix)
    producer = UserProducer(broker.bootstrap_servers, topic_prefix)
    producer.send(range(0, 50))
    producer.flush()
    port = free_port()
    job = start_job(broker.bootstrap_servers, fresh_dsn, topic_prefix, traversable_dir, port)
    try:
        wait_job(lambda: users_stored(fresh_dsn) == set(range(50)), job, traversable_dir, 240, "the first keys")

        flowing = threading.Event()
        keys = iter(range(50, 10_000))

        def keep_producing() -> None:  # ~40 records a second until told to stop
            while not flowing.is_set():
                producer.send(range(next(keys), next(keys) + 1))
                time.sleep(0.05)

        thread = threading.Thread(target=keep_producing, daemon=True)
        thread.start()
        time.sleep(2)
        os.kill(broker.pid, signal.SIGSTOP)
        time.sleep(30)  # the deliberate pause
        paused = stream_health(f"http://127.0.0.1:{port}/metrics", max_age_s=20)
        os.kill(broker.pid, signal.SIGCONT)
        time.sleep(3)
        flowing.set()
        thread.join(10)
        producer.flush()
        produced = producer.acked
        assert len(produced) > 100

        wait_job(lambda: users_stored(fresh_dsn) == produced, job, traversable_dir, 90, "every produced key")
        time.sleep(2)  # any further (empty) batch
        assert job.poll() is None, log_excerpt(traversable_dir)
        assert records_committed(fresh_dsn) == len(produced), "a record was committed twice"
        assert not paused and "neither committed" in paused.reason, paused
        wait_job(lambda: stream_health(f"http://127.0.0.1:{port}/metrics").healthy, job, traversable_dir, 30,
                 "the job to report itself healthy")
    finally:
        stop_job(job)
        print(log_excerpt(traversable_dir))  # shown with pytest -rP


def test_an_empty_broker_on_the_same_port_is_read_from_its_start(broker, fresh_dsn, topic_prefix,
                                                                 traversable_dir):
    create_topics(broker.bootstrap_servers, topic_prefix)
    producer = UserProducer(broker.bootstrap_servers, topic_prefix)
    producer.send(range(0, 40))
    producer.flush()
    port = free_port()
    # One record a micro-batch: the broker dies while the job still has records of it to read.
    job = start_job(broker.bootstrap_servers, fresh_dsn, topic_prefix, traversable_dir, port,
                    max_offsets_per_trigger="1")
    try:
        wait_job(lambda: len(users_stored(fresh_dsn)) >= 3, job, traversable_dir, 240, "the first keys")
        old_cluster = broker.cluster_id
        os.kill(broker.pid, signal.SIGKILL)
        broker.stop()
        replacement = EmbeddedBroker(traversable_dir / "broker", port=broker.port)
        replacement.start()
        broker.pid, broker._process = replacement.pid, replacement._process  # stopped by the fixture
        assert replacement.cluster_id != old_cluster
        create_topics(replacement.bootstrap_servers, topic_prefix)
        producer = UserProducer(replacement.bootstrap_servers, topic_prefix)
        producer.send(range(1000, 1010))
        producer.flush()

        new_keys = set(range(1000, 1010))
        wait_job(lambda: new_keys <= users_stored(fresh_dsn), job, traversable_dir, 120, "the new log's keys")
        old_processed = users_stored(fresh_dsn) - new_keys
        assert old_processed < set(range(40)), "the job read every old record before the broker died"
        lost = 40 - len(old_processed)
        lost_metric = ("pinpipe_stream_records_lost_total", {"topic": f"{topic_prefix}.user"})

        def reported() -> bool:
            text = metrics_text(port)
            return (sample(text, "pinpipe_stream_log_restarts_total") or 0) >= 1 and (
                sample(text, lost_metric[0], **lost_metric[1]) == lost
            )

        wait_job(reported, job, traversable_dir, 30, f"the restart and {lost} lost records in the metrics")
        assert records_committed(fresh_dsn) == len(old_processed) + len(new_keys)
        log = stream_log(traversable_dir)
        assert "log restarted" in log and replacement.cluster_id in log, log_excerpt(traversable_dir)
        assert "records lost for the speed layer" in log
        assert job.poll() is None
    finally:
        stop_job(job)
        print(log_excerpt(traversable_dir))  # shown with pytest -rP
