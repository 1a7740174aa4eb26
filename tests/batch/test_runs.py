"""Batch runs in ``pinpipe.batch_run``: who started them, and an interrupted run is cancelled."""

from __future__ import annotations

import psycopg
import pytest

from pinpipe.batch.runs import recorded_run, run_summary
from pinpipe.config import Settings

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
