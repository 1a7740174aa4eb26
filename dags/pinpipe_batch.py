"""Airflow DAG: the daily batch layer (thin: every task calls pinpipe.batch.tasks).

sink flushed the interval -> clean pin | geo | user (dt = the interval's day) -> answers ->
quality -> publish to PostgreSQL. Idempotent per ``data_interval_start``: re-running a day
overwrites that day's clean partitions and replaces the answers. Settings come from the
workers' environment (``PINPIPE_*``, ``PINPIPE_CONFIG``). Needs ``pinpipe[airflow]``.

A setup / teardown pair records the DAG run in ``pinpipe.batch_run`` (origin ``airflow``), as
``pinpipe batch`` and ``pinpipe up --batch-every`` record theirs: the teardown runs whatever
the steps did, and does not change the DAG run's state.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, setup, task, teardown
from airflow.timetables.interval import CronDataIntervalTimetable

TABLES = ("pin", "geo", "user")


@dag(
    dag_id="pinpipe_batch",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["pinpipe"],
)
def pinpipe_batch():
    @setup
    @task
    def record_start(data_interval_start=None, run_id=None) -> int | None:
        from pinpipe.batch.tasks import record_start as start

        return start(data_interval_start.date(), run_id)

    @teardown
    @task
    def record_outcome(batch_run_id: int | None, ti=None) -> None:
        from pinpipe.batch.tasks import record_outcome as finish

        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
        finish(batch_run_id, states)

    @task.sensor(poke_interval=60, timeout=6 * 3600, mode="reschedule")
    def sink_flushed(data_interval_end=None) -> bool:
        from pinpipe.batch.tasks import interval_flushed
        from pinpipe.config import load_settings

        return interval_flushed(load_settings(), data_interval_end)

    @task
    def clean(table: str, data_interval_start=None) -> dict:
        from pinpipe.batch.tasks import clean_day

        return clean_day(table, data_interval_start.date())

    @task
    def answers() -> list[dict]:
        from pinpipe.batch.tasks import answer_all

        return answer_all()

    @task(retries=0)  # a failed check fails the same way until the data or bounds change
    def quality(counts: list[dict], answer_counts: list[dict], data_interval_start=None) -> dict:
        from pinpipe.batch.tasks import check_day

        return check_day(counts, answer_counts, data_interval_start.date())

    @task
    def publish() -> dict:
        from pinpipe.batch.tasks import publish as publish_answers

        return publish_answers()

    flushed = sink_flushed()
    started = record_start()
    flushed >> started
    counts = [clean.override(task_id=f"clean_{table}")(table) for table in TABLES]
    started >> counts
    answer_counts = answers()
    counts >> answer_counts
    checked = quality(counts, answer_counts)
    published = publish()
    checked >> published
    # After every step (not only publish: a failed clean_pin marks publish upstream_failed
    # while clean_geo may still run).
    [*counts, answer_counts, checked, published] >> record_outcome(started)


pinpipe_batch()
