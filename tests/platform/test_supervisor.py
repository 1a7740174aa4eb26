"""The supervisor of `pinpipe up`: a killed child is restarted with backoff; it gives up after
the restart limit; children stop in reverse order, SIGKILL after the timeout."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from pinpipe.platform.supervisor import GaveUp, ProcessSpec, RestartPolicy, Supervisor
from pinpipe.processes import pid_is_alive
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
# Ignores SIGTERM: only SIGKILL ends it.
STUBBORN = [sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('RE' + 'ADY', flush=True); time.sleep(120)"]


def until(condition, timeout_s: float, what: str):
    return wait_until(condition, timeout_s, what, interval=0.02)


def test_restarts_a_killed_child_with_backoff_then_gives_up(tmp_path):
    events: list[tuple[float, str, str]] = []
    policy = RestartPolicy(backoff_s=0.2, backoff_max_s=5.0, max_restarts=2, window_s=60.0)
    failures: dict[str, bool] = {}

    def event(name: str, message: str, *, failure: bool = False) -> None:
        events.append((time.monotonic(), name, message))
        failures[message] = failure

    supervisor = Supervisor(policy, event)
    child = supervisor.start(ProcessSpec("sleeper", SLEEPER, tmp_path / "sleeper.log"), timeout_s=10)
    try:
        pids = [child.pid]
        restarted_at = []
        for expected_delay in (0.2, 0.4):  # doubles each restart
            killed_at = time.monotonic()
            os.kill(pids[-1], signal.SIGKILL)

            def restarted():
                supervisor.check()
                return child.pid not in pids and child.alive()

            until(restarted, 10, "the killed child is restarted")
            restarted_at.append(time.monotonic() - killed_at)
            assert restarted_at[-1] >= expected_delay
            pids.append(child.pid)
        assert child.restart_total == 2
        assert restarted_at[1] > restarted_at[0]

        os.kill(pids[-1], signal.SIGKILL)  # a third death within the window: over the limit
        with pytest.raises(GaveUp, match="sleeper exited .* after 2 restarts"):
            until(lambda: supervisor.check() and False, 10, "the supervisor gives up")
    finally:
        supervisor.stop_all()
    assert not any(pid_is_alive(pid) for pid in pids)
    messages = [message for _, _, message in events]
    assert any("restarting in 0.2 s" in m for m in messages)
    assert any("restarting in 0.4 s" in m for m in messages)
    # Each exit is told as a failure (up prints it red); starting and restarting are not.
    assert [m for m in messages if failures[m]] == [m for m in messages if "exited with code" in m]
    assert sum(failures.values()) == 2


def test_stop_all_goes_in_reverse_order_and_kills_after_the_timeout(tmp_path):
    events: list[str] = []
    supervisor = Supervisor(RestartPolicy(), lambda name, message, failure=False: events.append(f"{name}: {message}"))
    first = supervisor.start(ProcessSpec("first", SLEEPER, tmp_path / "first.log"), timeout_s=10)
    log = tmp_path / "stubborn.log"
    second = supervisor.start(
        ProcessSpec("stubborn", STUBBORN, log, health=lambda: "READY" in log.read_text(), stop_timeout_s=0.5),
        timeout_s=10,
    )
    started = time.monotonic()
    supervisor.stop_all()
    assert time.monotonic() - started < 10
    assert second.process.returncode == -signal.SIGKILL
    assert first.process.returncode == -signal.SIGTERM
    stops = [e for e in events if "stopping" in e]
    assert [e.split(":")[0] for e in stops] == ["stubborn", "first"]
    assert any("SIGKILL" in e for e in events)
    supervisor.check()  # stopped children are not restarted
    assert not first.alive() and not second.alive()


def test_a_dead_childs_own_children_are_killed_before_it_restarts(tmp_path):
    """Like the stream job's JVM when its Python driver is SIGKILLed."""
    pid_file = tmp_path / "grandchild.pid"
    parent = [sys.executable, "-c",
              "import subprocess, sys, time; "
              f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
              f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(120)"]  # fmt: skip
    supervisor = Supervisor(RestartPolicy(backoff_s=30.0), lambda name, message, failure=False: None)
    child = supervisor.start(ProcessSpec("driver", parent, tmp_path / "driver.log"), timeout_s=10)
    try:
        grandchild = int(until(lambda: pid_file.exists() and pid_file.read_text(), 10, "the grandchild"))
        os.kill(child.pid, signal.SIGKILL)
        until(lambda: supervisor.check() or not pid_is_alive(grandchild), 10, "the grandchild killed")
        assert child.restart_due is not None  # and it is restarted later, on its own schedule
    finally:
        supervisor.stop_all()
