import json
import subprocess
import sys
import time

from pinpipe.processes import end_process_group, pid_is_alive, process_table, terminate_pid
from pinpipe.services.state import (
    ServiceRecord,
    read_record,
    record_names,
    remove_record,
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


def test_a_record_with_a_web_ui_round_trips_and_is_listed_by_prefix(tmp_path):
    run = tmp_path / "run"
    for name in ("spark-worker-1", "spark-worker-2", "broker"):
        write_record(run, ServiceRecord(name, 1, "127.0.0.1:1", "2024-01-01T00:00:00+00:00", "http://127.0.0.1:2"))

    assert read_record(run, "spark-worker-2").web_ui == "http://127.0.0.1:2"
    assert record_names(run, "spark-worker-") == ["spark-worker-1", "spark-worker-2"]


def test_ending_a_process_group_ends_its_children_too():
    # A shell in its own group with a child that ignores SIGTERM (as a busy JVM may): both go.
    leader = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 60 & wait"], start_new_session=True)
    deadline = time.monotonic() + 10
    while not [p for p in process_table() if p.pgrp == leader.pid and p.pid != leader.pid]:
        assert time.monotonic() < deadline, "the child did not start"
        time.sleep(0.05)

    end_process_group(leader.pid, timeout=0.5)

    assert [p for p in process_table() if p.pgrp == leader.pid and p.state != "Z"] == []
    assert leader.wait(timeout=5) is not None
