"""Batch runs in ``pinpipe.batch_run``: who started them, and an interrupted run is cancelled."""

from __future__ import annotations

import psycopg
import pytest

from pinpipe.batch.recording import recorded_run
from pinpipe.config import Settings
from pinpipe.store.runs import run_summary

pytestmark = pytest.mark.integration


def test_runs_say_who_started_them_and_an_interrupted_run_is_not_a_failure(
    fresh_dsn, traversable_dir
):
    settings = Settings(data_dir=traversable_dir, postgres={"dsn": fresh_dsn})
    with recorded_run(settings, None):
        pass
    with pytest.raises(KeyboardInterrupt), recorded_run(settings, None, origin="up"):
        raise KeyboardInterrupt  # Ctrl-C, or `pinpipe up` stopping its batch job
    with psycopg.connect(fresh_dsn) as conn:
        rows = conn.execute(
            "SELECT origin, status, error, finished_at IS NOT NULL FROM pinpipe.batch_run ORDER BY run_id"
        ).fetchall()
        counts, _ = run_summary(conn)
    assert rows == [("cli", "success", None, True), ("up", "cancelled", "KeyboardInterrupt", True)]
    assert counts == {"success": 1, "failed": 0}


def test_a_run_whose_process_was_killed_is_failed_when_the_next_one_starts(fresh_dsn):
    """A real process records a run's start and is SIGKILLed (as a batch job killed mid-run):
    its row says 'running' until the next run starts, which records it as failed. An Airflow
    run (its first task records the start, then exits) is left alone."""
    import signal
    import subprocess
    import sys

    from pinpipe.store.runs import start_run
    from tests.conftest import checkout_env

    code = ("import sys, time; from pinpipe.store.runs import start_run; "
            "print(start_run(sys.argv[1], None, origin=sys.argv[2]), flush=True); time.sleep(120)")
    killed = {}
    for origin in ("airflow", "up"):  # the second start would fail the first, killed "up"
        job = subprocess.Popen([sys.executable, "-c", code, fresh_dsn, origin], stdout=subprocess.PIPE,
                               text=True, env=checkout_env())
        killed[origin] = int(job.stdout.readline())
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=10)
        job.stdout.close()

    def status(run_id: int) -> tuple:
        with psycopg.connect(fresh_dsn) as conn:
            return conn.execute("SELECT status, error, finished_at IS NOT NULL FROM pinpipe.batch_run"
                                " WHERE run_id = %s", (run_id,)).fetchone()

    assert status(killed["up"]) == ("running", None, False)
    start_run(fresh_dsn, None)
    failed, error, finished = status(killed["up"])
    assert (failed, finished) == ("failed", True) and "ended without recording an outcome" in error
    assert status(killed["airflow"]) == ("running", None, False)
