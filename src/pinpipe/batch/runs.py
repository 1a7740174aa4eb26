"""Each batch run recorded in PostgreSQL (``pinpipe.batch_run``): started, finished, outcome.

The batch job runs and exits, so nothing scrapes it; the dashboard's ``/metrics`` reads this
table instead (``pinpipe_batch_runs_total{status}``, ``pinpipe_batch_last_success_timestamp_seconds``),
so runs started by ``pinpipe batch``, ``pinpipe up --batch-every`` and Airflow all count, each
row saying which (its ``origin``). A run in one process is the with-block of
:func:`recorded_run`; a run whose steps are separate processes (the Airflow DAG's tasks) calls
:func:`start_recorded` in its first step and :func:`finish_recorded` after its last. Recording
is best effort: a PostgreSQL that cannot be reached is logged, and never changes the run's own
outcome.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date, datetime

from pinpipe.config import Settings

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

    from pinpipe.serve.schema import apply_migrations

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
    from pinpipe.services.state import pid_is_alive

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


@contextmanager
def recorded_run(
    settings: Settings, dates: list[date] | None, origin: str = CLI
) -> Iterator[int | None]:
    """Record the with-block as one batch run; yields the run id (None if not recorded).

    Any exception leaving the block (``QualityError`` included) marks the run failed and is
    re-raised unchanged; a ``KeyboardInterrupt`` marks it cancelled, so an interrupted run is
    not left running (nor counted as a failure).
    """
    from pinpipe.services.resolve import postgres_dsn

    with ExitStack() as stack:
        try:
            dsn = stack.enter_context(postgres_dsn(settings))
            run_id: int | None = start_run(dsn, dates, origin)
        except Exception as exc:  # monitoring must not stop the batch
            log.warning("batch run not recorded in PostgreSQL: %s", exc)
            dsn, run_id = "", None
        try:
            yield run_id
        except BaseException as exc:
            _finish_quietly(dsn, run_id, exc)
            raise
        _finish_quietly(dsn, run_id, None)


def start_recorded(
    settings: Settings, dates: list[date] | None, origin: str, external_id: str | None = None
) -> int | None:
    """Record the start of a run whose steps are separate processes; its id (None if not
    recorded). Pass the id to :func:`finish_recorded` after the last step."""
    from pinpipe.services.resolve import postgres_dsn

    try:
        with postgres_dsn(settings) as dsn:
            return start_run(dsn, dates, origin, external_id)
    except Exception as exc:  # monitoring must not stop the batch
        log.warning("batch run not recorded in PostgreSQL: %s", exc)
        return None


def finish_recorded(settings: Settings, run_id: int | None, error: str | None) -> None:
    """Record the outcome of a run begun with :func:`start_recorded` (``error`` None: success)."""
    from pinpipe.services.resolve import postgres_dsn

    if run_id is None:
        return
    try:
        with postgres_dsn(settings) as dsn:
            finish_run(dsn, run_id, error)
    except Exception as exc:
        log.warning("batch run %d: outcome not recorded in PostgreSQL: %s", run_id, exc)


def _finish_quietly(dsn: str, run_id: int | None, error: BaseException | None) -> None:
    if run_id is None:
        return
    try:
        finish_run(dsn, run_id, error)
    except Exception as exc:
        log.warning("batch run %d: outcome not recorded in PostgreSQL: %s", run_id, exc)


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
