"""Each batch run recorded in PostgreSQL (``pinpipe.batch_run``): started, finished, outcome.

The batch job runs and exits, so nothing scrapes it; the dashboard's ``/metrics`` reads this
table instead (``pinpipe_batch_runs_total{status}``, ``pinpipe_batch_last_success_timestamp_seconds``),
so runs started by ``pinpipe batch``, ``pinpipe up --batch-every`` and Airflow all count, each
row saying which (its ``origin``). This module holds the rows and the
queries, given a DSN; :mod:`pinpipe.batch.recording` records a run of the job with them.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import date, datetime

log = logging.getLogger(__name__)

RUNNING, SUCCESS, FAILED, CANCELLED = "running", "success", "failed", "cancelled"
STATUSES = (SUCCESS, FAILED)
"""The outcomes counted by the metrics; a ``cancelled`` run (interrupted on purpose) is neither."""
CLI, UP, AIRFLOW = "cli", "up", "airflow"
ORIGINS = (CLI, UP, AIRFLOW)
"""Who started a run: ``pinpipe batch`` (or another direct call of the job), ``pinpipe up
--batch-every``, the Airflow DAG."""


@dataclass(frozen=True)
class BatchRun:
    """One row of ``pinpipe.batch_run``."""

    run_id: int
    started_at: datetime
    finished_at: datetime | None
    status: str
    error: str | None
    dates: str | None
    origin: str


def start_run(
    dsn: str, dates: list[date] | None, origin: str = CLI, external_id: str | None = None
) -> int:
    """Insert a ``running`` row (migrating the schema first); returns its id.

    With ``external_id`` (an orchestrator's id of the run), starting the same run again (an
    Airflow retry, a cleared DAG run) resets its row to ``running`` instead of adding one.
    """
    import psycopg

    from pinpipe.store.schema import apply_migrations

    if origin not in ORIGINS:
        raise ValueError(f"origin: expected one of {ORIGINS}, got {origin!r}")
    apply_migrations(dsn)
    described = "all" if dates is None else ",".join(d.isoformat() for d in dates)
    with psycopg.connect(dsn, autocommit=True) as conn:
        fail_abandoned_runs(conn)
        row = conn.execute(
            "INSERT INTO pinpipe.batch_run (dates, host, pid, origin, external_id)"
            " VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (origin, external_id) DO UPDATE SET started_at = clock_timestamp(),"
            " finished_at = NULL, status = 'running', error = NULL, dates = EXCLUDED.dates,"
            " host = EXCLUDED.host, pid = EXCLUDED.pid"
            " RETURNING run_id",
            (described, socket.gethostname(), os.getpid(), origin, external_id),
        ).fetchone()
    assert row is not None
    return int(row[0])


def fail_abandoned_runs(conn) -> list[int]:
    """Mark ``failed`` the runs of this host still ``running`` whose process is gone: a job
    killed (SIGKILL, out of memory) could not record its outcome. Their ids.

    Runs of one process only (``pinpipe batch``, ``up``'s scheduler): an Airflow run's first
    task records the start and exits while its later tasks run. Called when a run starts and
    when ``pinpipe up`` sees its batch job fail; ``conn``: an open autocommit connection.
    """
    from pinpipe.processes import pid_is_alive

    rows = conn.execute(
        "SELECT run_id, pid FROM pinpipe.batch_run"
        " WHERE status = 'running' AND host = %s AND origin = ANY(%s)",
        (socket.gethostname(), [CLI, UP]),
    ).fetchall()
    gone = [(run_id, pid) for run_id, pid in rows if pid is None or not pid_is_alive(int(pid))]
    for run_id, pid in gone:
        conn.execute(
            "UPDATE pinpipe.batch_run SET status = 'failed', finished_at = clock_timestamp(), error = %s"
            " WHERE run_id = %s AND status = 'running'",
            (f"its process (pid {pid}) ended without recording an outcome: killed?", run_id),
        )
        log.warning("batch run %d: its process (pid %s) is gone; recorded as failed", run_id, pid)
    return [run_id for run_id, _ in gone]


def finish_run(dsn: str, run_id: int, error: BaseException | str | None) -> None:
    """Mark the run ``success`` (``error`` None), ``cancelled`` (a ``KeyboardInterrupt``: Ctrl-C,
    or ``pinpipe up`` stopping its batch job) or ``failed`` with the error (or its text)."""
    import psycopg

    status = (
        SUCCESS if error is None else CANCELLED if isinstance(error, KeyboardInterrupt) else FAILED
    )
    if isinstance(error, BaseException):
        error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE pinpipe.batch_run SET status = %s, error = %s, finished_at = clock_timestamp()"
            " WHERE run_id = %s",
            (status, None if error is None else error[:4000], run_id),
        )


def run_summary(conn) -> tuple[dict[str, int], float]:
    """Runs by :data:`STATUSES` (both, 0 included) and the Unix time of the end of the last
    successful run (0 if none), from an open psycopg connection."""
    counts = dict.fromkeys(STATUSES, 0)
    for status, count in conn.execute(
        "SELECT status, count(*) FROM pinpipe.batch_run WHERE status = ANY(%s) GROUP BY status",
        (list(STATUSES),),
    ):
        counts[status] = int(count)
    row = conn.execute(
        "SELECT coalesce(extract(epoch FROM max(finished_at)), 0) FROM pinpipe.batch_run"
        " WHERE status = 'success'"
    ).fetchone()
    return counts, float(row[0]) if row else 0.0


def latest_runs(conn, limit: int = 5) -> list[BatchRun]:
    """The most recently started runs, newest first, from an open psycopg connection (a
    restarted Airflow run keeps its id, so the order is by start time)."""
    rows = conn.execute(
        "SELECT run_id, started_at, finished_at, status, error, dates, origin FROM pinpipe.batch_run"
        " ORDER BY started_at DESC, run_id DESC LIMIT %s",
        (limit,),
    ).fetchall()
    return [BatchRun(*row) for row in rows]
