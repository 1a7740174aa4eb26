import json
import subprocess
import sys

from pinpipe.services.state import (
    ServiceRecord,
    pid_is_alive,
    read_record,
    remove_record,
    terminate_pid,
    write_record,
)


def _exited_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_record_round_trip(tmp_path):
    record = ServiceRecord("broker", 1, "127.0.0.1:9092", "2024-01-01T00:00:00+00:00")
    # pid 1 always exists
    write_record(tmp_path / "run", record)

    assert json.loads((tmp_path / "run" / "broker.json").read_text()) == {
        "name": "broker",
        "pid": 1,
        "address": "127.0.0.1:9092",
        "started_at": "2024-01-01T00:00:00+00:00",
    }
    assert read_record(tmp_path / "run", "broker") == record
    remove_record(tmp_path / "run", "broker")
    assert read_record(tmp_path / "run", "broker") is None
    remove_record(tmp_path / "run", "broker")  # idempotent


def test_stale_record_is_removed(tmp_path):
    write_record(tmp_path, ServiceRecord.now("postgres", _exited_pid(), "127.0.0.1:5432"))

    assert read_record(tmp_path, "postgres") is None
    assert not (tmp_path / "postgres.json").exists()


def test_unreadable_record_is_removed(tmp_path):
    (tmp_path / "broker.json").write_text("{not json")

    assert read_record(tmp_path, "broker") is None
    assert not (tmp_path / "broker.json").exists()


def test_zombie_counts_as_dead_and_terminate_reaps():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert pid_is_alive(process.pid)

    terminate_pid(process.pid, timeout=5)

    assert not pid_is_alive(process.pid)
    terminate_pid(process.pid)  # already gone: no error
