"""One embedded 2-worker Spark cluster for the whole test session, recorded as `pinpipe services up
--spark-workers 2` records it, and helpers to run pinpipe's jobs on it as real processes.

The jobs run in subprocesses (``pinpipe batch``, ``python -m pinpipe.speed``), which is what a
user runs; the test process itself starts no Spark session, so these tests can share a pytest
run with the local-mode ``spark`` fixture of the batch and speed tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pinpipe.config import Settings
from pinpipe.processes import process_table
from pinpipe.services.spark_cluster import (
    WORKER,
    alive_workers,
    cluster_down,
    cluster_up,
    master_state,
)
from pinpipe.services.state import read_record, record_names
from tests.conftest import make_traversable_dir, wait_until
from tests.speed.conftest import fresh_dsn, produce, topic_prefix  # noqa: F401  (fixtures)

WORKERS = 2


def cluster_settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, batch={"spark_workers": WORKERS, "spark_master": "embedded"})


@pytest.fixture(scope="session")
def spark_cluster() -> Iterator[Settings]:
    """The settings of a running 2-worker cluster (``data_dir`` holds its records, logs, event logs)."""
    data_dir = make_traversable_dir("pinpipe-cluster-")
    settings = cluster_settings(data_dir)
    groups: set[int] = set()
    try:
        cluster_up(settings, [])
        yield settings
    finally:
        groups = {r.pid for r in map(lambda n: read_record(settings.run_dir, n),
                                     record_names(settings.run_dir, "spark-")) if r is not None}
        cluster_down(settings)
        shutil.rmtree(data_dir, ignore_errors=True)
    # Stopping the cluster ends every process of its groups: no executor JVM or Python worker left.
    left = [p for p in process_table() if p.pgrp in groups and p.state != "Z"]
    assert not left, f"processes left by the Spark cluster: {left}"


def job_env(settings: Settings, **extra: str) -> dict[str, str]:
    """A job's environment: on the session's cluster (``embedded``, found through its records)."""
    return {
        **os.environ,
        "PINPIPE_DATA_DIR": str(settings.data_dir),
        "PINPIPE_BATCH__SPARK_MASTER": "embedded",
        "PINPIPE_BATCH__DRIVER_MEMORY": "1g",
        "PINPIPE_BATCH__SHUFFLE_PARTITIONS": "2",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, *argv], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def stop_group(process: subprocess.Popen, signum: int = signal.SIGTERM, timeout_s: float = 60) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def kill_worker(settings: Settings, name: str = f"{WORKER}1") -> int:
    """SIGKILL a worker's whole process group (worker, executor JVM, Python workers): a lost machine."""
    record = read_record(settings.run_dir, name)
    assert record is not None, f"{name} is not running"
    os.killpg(record.pid, signal.SIGKILL)
    return record.pid


def restore_workers(settings: Settings) -> None:
    """Start the workers a test killed again, and wait until all are registered."""
    cluster_up(settings, [])
    master = read_record(settings.run_dir, "spark-master")
    assert master is not None
    wait_until(lambda: len(alive_workers(master_state(master.web_ui))) == WORKERS, 60, "every worker back")
    assert len(record_names(settings.run_dir, WORKER)) == WORKERS


def running_app(settings: Settings, name: str) -> dict | None:
    """The master's entry of the running application ``name`` (None until it registered)."""
    master = read_record(settings.run_dir, "spark-master")
    state = master_state(master.web_ui) if master else None
    return next((a for a in (state or {}).get("activeapps", []) if a.get("name") == name), None)
