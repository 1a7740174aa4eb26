"""Nothing is left behind on any path out of `pinpipe demo` / `pinpipe services up`: a step that
fails, or Ctrl-C at set-up, during the stream job's warm-up and during the batch step.

Each run is checked twice: by the pids the run recorded (the services' records, `up.json`'s
components) and by the process table (every process working in or naming the run's directory).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pinpipe.processes import pid_is_alive, process_cmdline, process_table
from tests.platform.test_demo import demo_env, processes_of

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "pinpipe.cli"]


def _recorded_pids(run_dir: Path) -> set[int]:
    """Every pid a run wrote down: services' records and up.json's components."""
    pids = set()
    for name in ("broker.json", "postgres.json", "up.json"):
        try:
            document = json.loads((run_dir / name).read_text())
        except (OSError, ValueError):
            continue
        if name == "up.json":
            pids |= {int(c["pid"]) for c in document.get("components", []) if c.get("pid")}
        else:
            pids.add(int(document["pid"]))
    return pids


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live direct children of ``pid``."""
    return [(p.pid, process_cmdline(p.pid)) for p in process_table() if p.ppid == pid and p.state != "Z"]


def _wait_for(condition: Callable[[], bool], what: str, process: subprocess.Popen, log: Path,
              timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"exited ({process.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def _assert_nothing_left(directory: Path, recorded: set[int]) -> None:
    # Processes a dying run signalled may take a moment to exit: wait on that, with a deadline.
    deadline = time.monotonic() + 30
    while (processes_of(directory) or any(pid_is_alive(p) for p in recorded)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {p for p in recorded if pid_is_alive(p)} == set()
    assert processes_of(directory) == set()


def _start_demo(directory: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    env = demo_env(directory)
    env["COLUMNS"] = "200"
    log = directory / "demo.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*CLI, "demo", "--duration", "5s", "--rate", "20", "--dashboard-port", "0", *extra],
            cwd=directory, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    return process, log


def test_a_demo_whose_postgres_cannot_start_stops_the_broker_it_started(traversable_dir: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        env = demo_env(traversable_dir)
        env["PINPIPE_POSTGRES__EMBEDDED_PORT"] = str(taken.getsockname()[1])
        result = subprocess.run([*CLI, "demo", "--duration", "5s"], cwd=traversable_dir, env=env,
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if "failed:" in line]
    assert len(failed) == 1 and "pg_ctl start failed" in failed[0], result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert "broker stopped" in result.stdout
    assert not (traversable_dir / "data" / "run" / "broker.json").exists()
    _assert_nothing_left(traversable_dir, set())


def test_services_up_that_fails_leaves_what_ran_before_as_it_was(traversable_dir: Path):
    env = demo_env(traversable_dir)
    up = subprocess.run([*CLI, "services", "up"], cwd=traversable_dir, env=env, capture_output=True,
                        text=True, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    run_dir = traversable_dir / "data" / "run"
    before = _recorded_pids(run_dir)
    try:
        with socket.socket() as taken:  # another data dir whose PostgreSQL cannot start
            taken.bind(("127.0.0.1", 0))
            other = {**env, "PINPIPE_DATA_DIR": str(traversable_dir / "other"),
                     "PINPIPE_POSTGRES__EMBEDDED_PORT": str(taken.getsockname()[1])}
            failed = subprocess.run([*CLI, "services", "up"], cwd=traversable_dir, env=other,
                                    capture_output=True, text=True, timeout=120)
        assert failed.returncode == 1 and "services up failed: pg_ctl start failed" in failed.stderr
        assert not (traversable_dir / "other" / "run" / "broker.json").exists()
        assert all(pid_is_alive(pid) for pid in before) and len(before) == 2
    finally:
        subprocess.run([*CLI, "services", "down"], cwd=traversable_dir, env=env, timeout=120)
    _assert_nothing_left(traversable_dir, before)


def _jvm_started(directory: Path) -> Callable[[], bool]:
    def started() -> bool:
        return any("java" in process_cmdline(pid) for pid in processes_of(directory))

    return started


@pytest.mark.parametrize("moment", ["set-up", "stream warm-up", "batch step"])
def test_ctrl_c_at_any_moment_stops_everything_the_demo_started(traversable_dir: Path, moment: str):
    process, log = _start_demo(traversable_dir)
    run_dir = traversable_dir / "data" / "run"
    recorded: set[int] = set()
    try:
        if moment == "set-up":  # the broker is up, PostgreSQL is being started
            _wait_for(lambda: (run_dir / "broker.json").exists(), "the broker started", process, log)
        elif moment == "stream warm-up":  # the stream job's JVM runs, its query does not yet
            _wait_for(lambda: "stream starting" in log.read_text(), "the stream job started", process, log)
            _wait_for(_jvm_started(traversable_dir), "the stream job's JVM started", process, log)
        else:  # the batch job's JVM, a child of the demo itself, is running
            _wait_for(lambda: "batch starting" in log.read_text(), "the batch step started", process, log)
            _wait_for(lambda: any("java" in cmd for _, cmd in _children(process.pid)),
                      "the batch job's JVM started", process, log)
        recorded = _recorded_pids(run_dir) | {pid for pid, _ in _children(process.pid)}
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=180)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    output = log.read_text()
    assert code != 0, output[-3000:]
    assert "interrupted" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    _assert_nothing_left(traversable_dir, recorded)
