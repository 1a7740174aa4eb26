"""Operating-system processes: is one alive, what is its command line, end it (or its group),
and stop this one cleanly on a signal.

Every layer that starts or watches a process (services, the batch run records, ``pinpipe up``)
uses these, so they sit at the bottom with the settings and the record contracts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Ctrl-C and what ``pinpipe down``, a supervisor or a job runner sends: both mean stop cleanly."""


@contextlib.contextmanager
def stop_on_signals(event: threading.Event | None = None) -> Iterator[threading.Event]:
    """Within the block, SIGINT and SIGTERM set a stop event (``event``, or a new one: yielded)
    instead of interrupting; the previous handlers come back when the block ends.

    For a long-running loop that checks the event between units of work (a micro-batch, a
    round of files, a request): the unit in flight finishes, then the loop ends. Main thread
    only, as :func:`signal.signal`.
    """
    stop = event if event is not None else threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def pid_is_alive(pid: int) -> bool:
    """True if ``pid`` is a live process; an exited child not yet reaped (zombie) is dead."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return not Path("/proc/self").exists()  # no procfs: trust kill(0)
    for line in status.splitlines():
        if line.startswith("State:"):
            return "Z" not in line.split()[1]
    return True


def process_cmdline(pid: int) -> str:
    """The command line of ``pid`` joined by spaces ('' if unknown); guards against pid reuse."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", errors="replace").strip()


@dataclass(frozen=True)
class ProcessEntry:
    """One line of the process table (``/proc/<pid>/stat``)."""

    pid: int
    state: str  # "R", "S", ... "Z" for a zombie
    ppid: int
    pgrp: int


def process_table() -> Iterator[ProcessEntry]:
    """Every process ``/proc`` lists now (none without procfs); one that exits meanwhile is skipped."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name in parentheses may hold spaces: the fields follow its last ")".
            state, ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue
        yield ProcessEntry(int(stat.parent.name), state, int(ppid), int(pgrp))


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` is gone (reaping it if it is our child); True if it exited in time."""
    deadline = time.monotonic() + timeout
    while True:
        _reap(pid)
        if not pid_is_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def terminate_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL and wait again. No error if already gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if not pid_is_alive(pid):
            _reap(pid)
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_for_exit(pid, wait):
            return
    raise TimeoutError(f"process {pid} did not exit after SIGKILL")


def end_process_group(pgid: int, timeout: float = 10.0) -> None:
    """SIGTERM process group ``pgid``, wait up to ``timeout`` until every member is gone
    (zombies count as gone), then SIGKILL what is left. No error if the group is empty.

    For a service whose children must not outlive it: a Spark worker's executor JVMs and
    their Python workers are in the worker's group, and SIGKILL of the worker alone leaves them.
    """

    def alive() -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        if not Path("/proc/self").exists():  # no procfs: a zombie cannot be told apart
            return True
        return any(p.pgrp == pgid and p.state != "Z" for p in process_table())

    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if not alive():
            _reap(pgid)
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while alive() and time.monotonic() < deadline:
            _reap(pgid)
            time.sleep(0.05)
    _reap(pgid)


def _reap(pid: int) -> None:
    # Zombies of our own children would otherwise linger until this process exits.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
