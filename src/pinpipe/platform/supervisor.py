"""Process supervision for ``pinpipe up``: start children health-checked, restart the ones that
die (exponential backoff), give up loudly after too many restarts, stop them in reverse order.

Children run in sessions of their own, so a Ctrl-C in the terminal reaches only the
supervisor, which then stops them one by one (SIGTERM, wait, SIGKILL after the timeout): the
lake sink gets to flush, the stream job to finish its micro-batch. Each child's output is
appended to its log file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class Event(Protocol):
    """Told (component name, message) for everything worth telling the user; ``failure`` marks
    what went wrong (a process exited, had to be killed, data was lost), for the reader's eye."""

    def __call__(self, name: str, message: str, *, failure: bool = False) -> None: ...


@dataclass(frozen=True)
class RestartPolicy:
    """Delay before restart n (1-based) is ``backoff_s * 2**(n-1)``, at most ``backoff_max_s``;
    more than ``max_restarts`` restarts within ``window_s`` seconds means giving up."""

    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    max_restarts: int = 5
    window_s: float = 300.0

    def delay(self, restarts_in_window: int) -> float:
        return min(self.backoff_max_s, self.backoff_s * 2 ** max(0, restarts_in_window - 1))


@dataclass
class ProcessSpec:
    """How to run one component and how to tell it is healthy."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    health: Callable[[], bool] | None = None  # None: alive means healthy
    address: str = ""
    restart: bool = True
    stop_timeout_s: float = 30.0


class GaveUp(RuntimeError):
    """A component kept dying: more restarts than the policy allows within its window."""


class HealthTimeout(RuntimeError):
    """A component did not become healthy in time (or exited while starting)."""


@dataclass
class Child:
    spec: ProcessSpec
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: deque[float] = field(default_factory=deque)  # times of recent restarts
    restart_total: int = 0
    restart_due: float | None = None  # when a scheduled restart happens
    last_exit: int | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    """Children in start order; :meth:`watch` keeps them alive, :meth:`stop_all` ends them."""

    def __init__(self, policy: RestartPolicy | None = None, on_event: Event | None = None) -> None:
        self.policy = policy or RestartPolicy()
        self.on_event = on_event or (lambda name, message: None)
        self.children: dict[str, Child] = {}
        self._lock = threading.Lock()

    # --- starting ---------------------------------------------------------------------------

    def _spawn(self, child: Child) -> None:
        spec = child.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log_path, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {spec.name}: {' '.join(spec.argv)}\n".encode())
            log.flush()
            child.process = subprocess.Popen(
                spec.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(spec.env or {})},
                start_new_session=True,  # Ctrl-C reaches the supervisor only
            )
        child.started_at = time.monotonic()
        child.restart_due = None

    def start(self, spec: ProcessSpec, *, timeout_s: float = 60.0, stop: threading.Event | None = None) -> Child:
        """Start ``spec`` and wait until it is healthy; raises :class:`HealthTimeout`."""
        child = Child(spec)
        with self._lock:
            self.children[spec.name] = child
            self._spawn(child)
        self.wait_healthy(spec.name, timeout_s=timeout_s, stop=stop)
        self.on_event(spec.name, f"healthy (pid {child.pid})")
        return child

    def wait_healthy(self, name: str, *, timeout_s: float, stop: threading.Event | None = None) -> None:
        child = self.children[name]
        deadline = time.monotonic() + timeout_s
        while True:
            if not child.alive():
                code = child.process.poll() if child.process else None
                raise HealthTimeout(f"{name} exited with code {code} while starting; see {child.spec.log_path}")
            if child.spec.health is None or child.spec.health():
                return
            if stop is not None and stop.is_set():
                raise HealthTimeout(f"{name}: interrupted while starting")
            if time.monotonic() > deadline:
                raise HealthTimeout(f"{name} not healthy after {timeout_s:.0f} s; see {child.spec.log_path}")
            time.sleep(0.2)

    # --- supervising ------------------------------------------------------------------------

    def check(self, now: float | None = None) -> None:
        """One supervision step: notice exits, schedule and perform restarts.

        Raises :class:`GaveUp` when a component exceeds the restart policy.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            for child in self.children.values():
                if child.process is None or child.alive() or not child.spec.restart:
                    continue
                if child.restart_due is None:  # a new death
                    child.last_exit = child.process.returncode
                    # What it started lives on in its process group (the stream job's JVM kept
                    # running ~20 s after its Python died): end it before the restart.
                    _signal(child.process, signal.SIGKILL, group=True)
                    while child.restarts and now - child.restarts[0] > self.policy.window_s:
                        child.restarts.popleft()
                    if len(child.restarts) >= self.policy.max_restarts:
                        raise GaveUp(
                            f"{child.spec.name} exited (code {child.last_exit}) after "
                            f"{len(child.restarts)} restarts within {self.policy.window_s:.0f} s: "
                            f"giving up; see {child.spec.log_path}"
                        )
                    child.restarts.append(now)
                    delay = self.policy.delay(len(child.restarts))
                    child.restart_due = now + delay
                    self.on_event(child.spec.name,
                                  f"exited with code {child.last_exit}; restarting in {delay:.1f} s "
                                  f"(restart {len(child.restarts)} of at most {self.policy.max_restarts} "
                                  f"in {self.policy.window_s:.0f} s)", failure=True)  # fmt: skip
                elif now >= child.restart_due:
                    self._spawn(child)
                    child.restart_total += 1
                    self.on_event(child.spec.name, f"restarted (pid {child.pid})")

    def watch(self, stop: threading.Event, *, interval_s: float = 0.2,
              tick: Callable[[], None] | None = None) -> None:
        """Supervise until ``stop`` is set; ``tick`` runs every step (schedules, ...)."""
        while not stop.wait(interval_s):
            self.check()
            if tick is not None:
                tick()

    # --- stopping ---------------------------------------------------------------------------

    def stop(self, name: str) -> int | None:
        """SIGTERM ``name``, wait its stop timeout, then SIGKILL; returns its exit code."""
        with self._lock:
            child = self.children.get(name)
            if child is None or child.process is None:
                return None
            child.spec = _no_restart(child.spec)
            process = child.process
        if process.poll() is None:
            self.on_event(name, f"stopping (pid {process.pid})")
            _signal(process, signal.SIGTERM)
            try:
                process.wait(timeout=child.spec.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.on_event(name, f"did not stop within {child.spec.stop_timeout_s:.0f} s: SIGKILL",
                              failure=True)
                _signal(process, signal.SIGKILL, group=True)
                process.wait(timeout=10)
        _signal(process, signal.SIGKILL, group=True)  # leftovers of its session (e.g. a JVM)
        return process.returncode

    def stop_all(self) -> None:
        """Stop every child, last started first."""
        for name in reversed(list(self.children)):
            self.stop(name)


def _no_restart(spec: ProcessSpec) -> ProcessSpec:
    from dataclasses import replace

    return replace(spec, restart=False)


def _signal(process: subprocess.Popen, sig: int, group: bool = False) -> None:
    try:
        if group:
            os.killpg(process.pid, sig)  # the child leads its own session and process group
        else:
            process.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass
