"""The batch job as steps for an orchestrator (the Airflow DAG): one call per task.

Each step loads the settings itself (``PINPIPE_*`` / ``PINPIPE_CONFIG``), works on one day,
takes and returns plain data (XCom-friendly) and is idempotent: it overwrites that day's
partitions or replaces the answers. A failed quality check raises :class:`QualityError`.

The orchestrator's run is one batch run in ``pinpipe.batch_run`` (origin ``airflow``), as a
``pinpipe batch`` run is: :func:`record_start` before the first step, :func:`record_outcome`
after the last, whatever happened in between (:mod:`pinpipe.store.runs`).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta

from pinpipe.config import Settings, load_settings
from pinpipe.events import Table

FLUSH_GRACE = timedelta(seconds=60)
FAILED_STATES = ("failed", "upstream_failed")
"""Task states that fail the run (Airflow's names)."""


def interval_flushed(
    settings: Settings, interval_end: datetime, now: datetime | None = None
) -> bool:
    """Whether the lake sink has written every record broker-stamped before ``interval_end``.

    The sink closes a file at the latest ``lake.rotate_age_s`` after its first record, so once
    that age plus a grace period has passed since the interval's end, the interval is on disk.
    """
    now = now or datetime.now(UTC)
    return now >= interval_end + timedelta(seconds=settings.lake.rotate_age_s) + FLUSH_GRACE


def clean_day(table: str, day: date) -> dict:
    """Clean one table's raw partition ``dt=day``; returns its :class:`TableCounts` as a dict."""
    from pinpipe.batch.job import clean_table
    from pinpipe.spark.session import get_spark

    settings = load_settings()
    counts = clean_table(settings, Table(table), [day], spark=get_spark(settings))
    return asdict(counts)


def answer_all() -> list[dict]:
    """Recompute the nine answers over the clean layer; returns their row counts."""
    from pinpipe.batch.job import build_answers
    from pinpipe.spark.session import get_spark

    settings = load_settings()
    return [asdict(a) for a in build_answers(settings, spark=get_spark(settings))]


def check_day(counts: list[dict], answers: list[dict], day: date) -> dict:
    """Run the quality checks of a day's run; raises QualityError when one fails."""
    from pinpipe.batch.job import AnswerCounts, check_quality, read_counts
    from pinpipe.batch.quality import QualityError
    from pinpipe.spark.session import get_spark

    settings = load_settings()
    report = check_quality(
        settings,
        read_counts(counts),
        [AnswerCounts(**a) for a in answers],
        [day],
        spark=get_spark(settings),
    )
    if not report.passed:
        raise QualityError(report)
    return {"passed": True, "checks": len(report.checks)}


def publish() -> dict[str, int]:
    """Replace the PostgreSQL answer tables with the lake's answers (one transaction)."""
    from pinpipe.batch.job import read_answers
    from pinpipe.batch.publish import publish_answers

    settings = load_settings()
    return publish_answers(settings, read_answers(settings))


def record_start(day: date, orchestrator_run_id: str) -> int | None:
    """Record the start of the orchestrator's run of ``day``; returns its ``batch_run`` id (None
    if it could not be recorded). Starting the same run again (a retry, a cleared run) restarts
    its row rather than adding one."""
    from pinpipe.batch.recording import start_recorded
    from pinpipe.store.runs import AIRFLOW

    return start_recorded(load_settings(), [day], AIRFLOW, orchestrator_run_id)


def record_outcome(run_id: int | None, task_states: dict[str, str | None]) -> str | None:
    """Record the outcome of the run begun by :func:`record_start`, from its tasks' states
    (task id -> state): success, or failed naming the failed tasks. Returns the error recorded."""
    from pinpipe.batch.recording import finish_recorded

    failed = sorted(task for task, state in task_states.items() if state in FAILED_STATES)
    error = f"failed tasks: {', '.join(failed)}" if failed else None
    finish_recorded(load_settings(), run_id, error)
    return error
