"""Each batch run recorded in PostgreSQL (``pinpipe.batch_run``): started, finished, outcome.

The batch job runs and exits, so nothing scrapes it; the dashboard's ``/metrics`` reads this
table instead (``pinpipe_batch_runs_total{status}``, ``pinpipe_batch_last_success_timestamp_seconds``),
so runs started by ``pinpipe batch``, ``pinpipe up --batch-every`` and Airflow all count.
Recording is best effort: a PostgreSQL that cannot be reached is logged, and never changes
the run's own outcome.
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

RUNNING, SUCCESS, FAILED = "running", "success", "failed"
STATUSES = (SUCCESS, FAILED)


@dataclass(frozen=True)
class BatchRun:
    """One row of ``pinpipe.batch_run``."""

    run_id: int
    started_at: datetime
    finished_at: datetime | None
    status: str
    error: str | None
    dates: str | None


def start_run(dsn: str, dates: list[date] | None) -> int:
    """Insert a ``running`` row (migrating the schema first); returns its id."""
    import psycopg

    from pinpipe.serve.schema import apply_migrations

    apply_migrations(dsn)
    described = "all" if dates is None else ",".join(d.isoformat() for d in dates)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO pinpipe.batch_run (dates, host, pid) VALUES (%s, %s, %s) RETURNING run_id",
            (described, socket.gethostname(), os.getpid()),
        ).fetchone()
    assert row is not None
    return int(row[0])


def finish_run(dsn: str, run_id: int, error: BaseException | None) -> None:
    """Mark the run ``success`` (``error`` None) or ``failed`` with the error's text."""
    import psycopg

    status = SUCCESS if error is None else FAILED
    text = None if error is None else f"{type(error).__name__}: {error}"[:4000]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE pinpipe.batch_run SET status = %s, error = %s, finished_at = clock_timestamp()"
            " WHERE run_id = %s",
            (status, text, run_id),
        )


@contextmanager
def recorded_run(settings: Settings, dates: list[date] | None) -> Iterator[int | None]:
    """Record the with-block as one batch run; yields the run id (None if not recorded).

    Any exception leaving the block (``QualityError`` included) marks the run failed and is
    re-raised unchanged; ``KeyboardInterrupt`` too, so an interrupted run is not left running.
    """
    from pinpipe.services.resolve import postgres_dsn

    with ExitStack() as stack:
        try:
            dsn = stack.enter_context(postgres_dsn(settings))
            run_id: int | None = start_run(dsn, dates)
        except Exception as exc:  # monitoring must not stop the batch
            log.warning("batch run not recorded in PostgreSQL: %s", exc)
            dsn, run_id = "", None
        try:
            yield run_id
        except BaseException as exc:
            _finish_quietly(dsn, run_id, exc)
            raise
        _finish_quietly(dsn, run_id, None)


def _finish_quietly(dsn: str, run_id: int | None, error: BaseException | None) -> None:
    if run_id is None:
        return
    try:
        finish_run(dsn, run_id, error)
    except Exception as exc:
        log.warning("batch run %d: outcome not recorded in PostgreSQL: %s", run_id, exc)


def run_summary(conn) -> tuple[dict[str, int], float]:
    """Runs by finished status (both statuses, 0 included) and the Unix time of the end of the
    last successful run (0 if none), from an open psycopg connection."""
    counts = dict.fromkeys(STATUSES, 0)
    for status, count in conn.execute(
        "SELECT status, count(*) FROM pinpipe.batch_run WHERE status <> 'running' GROUP BY status"
    ):
        counts[status] = int(count)
    row = conn.execute(
        "SELECT coalesce(extract(epoch FROM max(finished_at)), 0) FROM pinpipe.batch_run"
        " WHERE status = 'success'"
    ).fetchone()
    return counts, float(row[0]) if row else 0.0


def latest_runs(conn, limit: int = 5) -> list[BatchRun]:
    """The most recent runs, newest first, from an open psycopg connection."""
    rows = conn.execute(
        "SELECT run_id, started_at, finished_at, status, error, dates FROM pinpipe.batch_run"
        " ORDER BY run_id DESC LIMIT %s",
        (limit,),
    ).fetchall()
    return [BatchRun(*row) for row in rows]
