"""What ``pinpipe up`` does on each tick besides supervising: the batch job every
``--batch-every`` (a killed run recorded as failed), and the end of a bounded run."""

from __future__ import annotations

import os
import subprocess
import time
from typing import TYPE_CHECKING

from pinpipe.platform.run import UpRun, save_state
from pinpipe.platform.specs import python

if TYPE_CHECKING:
    pass

EMULATOR_GRACE_S = 30.0  # a bounded run waits this long past its end for the emulator's last requests


def batch_tick(run: UpRun, env: dict[str, str]) -> None:
    every = run.options.batch_every_s
    if not every:
        return
    now = time.monotonic()
    if run.batch_process is not None:
        code = run.batch_process.poll()
        if code is None:
            return
        outcome = "succeeded" if code == 0 else f"failed (exit {code})"
        run.event("batch", f"run {outcome}" + ("" if code == 0 else "; see logs/batch.log"))
        run.batch_process = None
        if code != 0:  # killed, it could not record its outcome itself
            _fail_abandoned_runs(run)
        _show_batch(run, None, f"last run {outcome} at {time.strftime('%H:%M:%S')}")
    if run.next_batch_at is None:
        run.next_batch_at = now + every
    if now < run.next_batch_at:
        return
    run.next_batch_at = now + every
    log = run.settings.data_dir / "logs" / "batch.log"
    with open(log, "ab") as out:
        run.batch_process = subprocess.Popen(
            python("pinpipe.cli", "batch", "--all", "--origin", "up"), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True,
        )
    run.event("batch", f"run started (pid {run.batch_process.pid})")
    _show_batch(run, run.batch_process.pid, f"running since {time.strftime('%H:%M:%S')}")


def _fail_abandoned_runs(run: UpRun) -> None:
    import psycopg

    from pinpipe.store.runs import fail_abandoned_runs

    try:
        with psycopg.connect(run.dsn, autocommit=True, connect_timeout=5) as conn:
            fail_abandoned_runs(conn)
    except Exception as error:  # monitoring: the next run's start records it too
        run.event("batch", f"could not record the failed run: {type(error).__name__}")


def _show_batch(run: UpRun, pid: int | None, note: str) -> None:
    """Record the batch run in progress (its pid) or the last one's outcome, for `pinpipe status`."""
    for component in run.components:
        if component.name == "batch":
            component.pid, component.note = pid, f"{note}; logs/batch.log"
    save_state(run, "running")


def duration_tick(run: UpRun) -> None:
    """A bounded run stops once its time is up and the emulator has had its last answers."""
    limit = run.options.duration_s
    if limit is None or run.running_since is None or run.stop.is_set():
        return
    elapsed = time.monotonic() - run.running_since
    if elapsed < limit:
        return
    emulator = run.supervisor.children.get("emulator") if run.supervisor else None
    if emulator is not None and emulator.alive() and elapsed < limit + EMULATOR_GRACE_S:
        return  # its last requests are in flight
    if emulator is not None and emulator.process is not None and emulator.process.poll() is not None:
        run.event("emulator", f"finished (exit {emulator.process.returncode})")
    run.event("up", f"{limit:g} s are up: stopping")
    run.stopped_by = "duration"
    run.stop.set()
