"""Session-wide fixtures shared by every test package: one broker, one PostgreSQL, one Spark.

Both start lazily (only when a test asks for them) and are stopped at the end of the run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pinpipe.services.broker import EmbeddedBroker
from pinpipe.services.postgres import EmbeddedPostgres

SRC = Path(__file__).resolve().parents[1] / "src"


def checkout_env(**extra: str) -> dict[str, str]:
    """The environment of a pinpipe process a test starts in another directory: this
    checkout's ``src`` first on PYTHONPATH (a relative ``PYTHONPATH=src`` would resolve to
    nothing there and the process would import the pinpipe installed in the venv)."""
    path = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, **extra}


def wait_until(condition: Callable[[], object], timeout_s: float, what: str, interval: float = 0.2) -> object:
    """Poll ``condition`` until it returns something true (returned); fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def make_traversable_dir(prefix: str = "pinpipe-test-") -> Path:
    """A fresh directory under /tmp, mode 0755.

    pytest's ``tmp_path`` lives under ``/tmp/pytest-of-<user>`` (mode 0700), which the
    unprivileged user running PostgreSQL (when tests run as root) cannot enter.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def traversable_dir() -> Iterator[Path]:
    """A fresh 0755 directory under /tmp, removed after the test."""
    path = make_traversable_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _no_binaries_copy_left_behind() -> Iterator[None]:
    """As root in a clone the server user cannot enter, the servers the tests start run a copy
    of PostgreSQL's binaries in the server home (pinpipe.services.pg_home); one made by this
    run is removed at its end, so runs from fresh clones (CI) do not pile copies up."""
    from pinpipe.services.pg_common import postgres_bin_dir
    from pinpipe.services.pg_home import installation_copy
    from pinpipe.services.postgres import DEFAULT_SERVER_HOME

    copy = installation_copy(DEFAULT_SERVER_HOME, postgres_bin_dir())
    existed = copy.exists()
    yield
    if not existed:
        shutil.rmtree(copy, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of one embedded Tansu broker shared by the whole test session.

    Memory storage: topics start empty each session. Topics are auto-created on produce;
    use unique topic names per test, since the broker is shared.
    """
    log_dir = make_traversable_dir("pinpipe-broker-")
    try:
        with EmbeddedBroker(log_dir) as broker:
            yield broker.bootstrap_servers
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """DSN of one embedded PostgreSQL shared by the whole test session (database ``pinpipe``).

    The DSN holds the password: do not print it (``pinpipe.services.mask_dsn``).
    """
    base = make_traversable_dir("pinpipe-pg-")
    try:
        with EmbeddedPostgres(base / "postgres") as server:
            yield server.dsn
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One local Spark session (local[2], UTC, quiet) for the whole run, batch and speed alike."""
    from pinpipe.config import Settings
    from pinpipe.spark.session import get_spark

    settings = Settings(batch={"spark_master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"})
    session = get_spark(settings, app_name="pinpipe-tests")
    yield session
    session.stop()
