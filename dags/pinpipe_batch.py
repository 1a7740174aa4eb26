"""Airflow DAG: the daily batch layer (thin: every task calls pinpipe.batch.tasks).

sink flushed the interval -> clean pin | geo | user (dt = the interval's day) -> answers ->
quality -> publish to PostgreSQL. Idempotent per ``data_interval_start``: re-running a day
overwrites that day's clean partitions and replaces the answers. Settings come from the
workers' environment (``PINPIPE_*``, ``PINPIPE_CONFIG``). Needs ``pinpipe[airflow]``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task
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
    counts = [clean.override(task_id=f"clean_{table}")(table) for table in TABLES]
    flushed >> counts
    answer_counts = answers()
    counts >> answer_counts
    quality(counts, answer_counts) >> publish()


pinpipe_batch()
