"""Record a batch run in PostgreSQL (:mod:`pinpipe.store.runs`), best effort.

A run in one process is the with-block of :func:`recorded_run`; a run whose steps are separate
processes (the Airflow DAG's tasks) calls :func:`start_recorded` in its first step and
:func:`finish_recorded` after its last. Recording is best effort: a PostgreSQL that cannot be
reached is logged, and never changes the run's own outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date

from pinpipe.config import Settings
from pinpipe.store.runs import CLI, finish_run, start_run

log = logging.getLogger(__name__)


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
