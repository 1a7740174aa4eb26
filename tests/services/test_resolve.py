import os
from pathlib import Path

import psycopg
import pytest

from pinpipe.config import load_settings
from pinpipe.events import all_topics
from pinpipe.processes import pid_is_alive, process_cmdline
from pinpipe.services import lifecycle, resolve
from pinpipe.services.pg_common import postgres_is_healthy
from pinpipe.services.state import ServiceRecord, read_record, write_record
from pinpipe.services.topics import describe_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(traversable_dir):
    return load_settings(
        data_dir=traversable_dir / "data",
        broker={"topic_prefix": "t", "partitions": 2},
    )


def test_up_status_down(settings):
    try:
        up = lifecycle.services_up(settings)
        assert [(s.name, s.mode, s.healthy) for s in up] == [
            ("broker", "embedded", True),
            ("postgres", "embedded", True),
        ]
        broker_record = read_record(settings.run_dir, "broker")
        postgres_record = read_record(settings.run_dir, "postgres")
        assert broker_record is not None and postgres_record is not None
        assert up[0].address == broker_record.address
        topics = describe_topics({"bootstrap.servers": broker_record.address})
        assert {t: topics.get(t) for t in all_topics("t")} == {
            "t.pin": 2, "t.geo": 2, "t.user": 2, "t.dlq": 2,
        }  # fmt: skip

        again = lifecycle.services_up(settings)
        assert "already running" in again[0].detail and "already running" in again[1].detail
        assert read_record(settings.run_dir, "broker") == broker_record

        status = lifecycle.services_status(settings)
        assert [(s.name, s.mode, s.healthy) for s in status] == [
            ("broker", "embedded", True),
            ("postgres", "embedded", True),
        ]
        with resolve.postgres_dsn(settings) as dsn:
            assert dsn.rsplit(":", 1)[1].split("/")[0] == postgres_record.address.split(":")[1]
            password = dsn.split(":")[2].split("@")[0]
            assert all(password not in s.address and password not in s.detail for s in status)
        # the with-block reused the detached server and left it running
        assert pid_is_alive(postgres_record.pid)
        with resolve.kafka_bootstrap(settings) as bootstrap:
            assert bootstrap == broker_record.address
    finally:
        down = lifecycle.services_down(settings)

    assert [(s.name, s.detail.split()[0]) for s in down] == [
        ("broker", "stopped"),
        ("postgres", "stopped"),
    ]
    assert not pid_is_alive(broker_record.pid)
    assert not pid_is_alive(postgres_record.pid)
    assert read_record(settings.run_dir, "broker") is None
    assert read_record(settings.run_dir, "postgres") is None
    assert [(s.name, s.healthy, s.detail) for s in lifecycle.services_status(settings)] == [
        ("broker", False, "not running"),
        ("postgres", False, "not running"),
    ]
    assert [s.detail for s in lifecycle.services_down(settings)] == ["not running", "not running"]


def _pids_running(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and text in process_cmdline(int(entry.name)):
            pids.append(int(entry.name))
    return [pid for pid in pids if pid_is_alive(pid)]


def test_temporary_services_for_a_with_block(settings):
    with resolve.kafka_bootstrap(settings) as bootstrap:
        topics = describe_topics({"bootstrap.servers": bootstrap})
        assert {t: topics.get(t) for t in all_topics("t")} == dict.fromkeys(all_topics("t"), 2)
        broker_pids = _pids_running(f"tcp://{bootstrap}")
        assert len(broker_pids) == 1
    assert not pid_is_alive(broker_pids[0])

    with resolve.postgres_dsn(settings) as dsn:
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("pinpipe",)
        server = resolve.embedded_postgres(settings)
        assert server.attach()
        postmaster = server.pid
    assert not pid_is_alive(postmaster)
    assert not postgres_is_healthy(dsn, timeout=1)
    assert read_record(settings.run_dir, "broker") is None


def test_configured_services_are_used_and_nothing_is_started(
    traversable_dir, kafka_bootstrap, pg_dsn
):
    settings = load_settings(
        data_dir=traversable_dir / "data",
        broker={"bootstrap_servers": kafka_bootstrap, "topic_prefix": "ext"},
        postgres={"dsn": pg_dsn},
    )

    with resolve.kafka_bootstrap(settings) as bootstrap:
        assert bootstrap == kafka_bootstrap
    with resolve.postgres_dsn(settings) as dsn:
        assert dsn == pg_dsn
    status = lifecycle.services_status(settings)

    assert [(s.name, s.mode, s.healthy) for s in status] == [
        ("broker", "external", True),
        ("postgres", "external", True),
    ]
    assert "****" in status[1].address and pg_dsn not in status[1].address
    assert not settings.data_dir.exists()  # no embedded state, logs or records


def test_record_whose_pid_was_reused_is_ignored(settings):
    # This test process is alive but is not the recorded broker.
    write_record(settings.run_dir, ServiceRecord.now("broker", os.getpid(), "127.0.0.1:1"))

    status = lifecycle.services_status(settings)

    assert (status[0].name, status[0].healthy, status[0].detail) == ("broker", False, "not running")
    assert not (settings.run_dir / "broker.json").exists()
