"""The Airflow DAG: it imports cleanly and a real ``dag.test()`` runs one day of a small lake,
recorded as one run in ``pinpipe.batch_run``.

Airflow lives in its own environment (its pins conflict with the ingest API's FastAPI):
the test uses ``PINPIPE_AIRFLOW_PYTHON``, else ``<repo>/.venv-airflow/bin/python``, else this
interpreter if it has Airflow; otherwise it is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import psycopg
import pytest

from pinpipe.batch.tasks import record_outcome, record_start
from tests.batch.test_job import write_small_lake

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def airflow_python() -> str | None:
    configured = os.environ.get("PINPIPE_AIRFLOW_PYTHON")
    if configured:
        return configured
    local = REPO / ".venv-airflow" / "bin" / "python"
    if local.is_file():
        return str(local)
    return sys.executable if importlib.util.find_spec("airflow") else None


def batch_runs(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT run_id, origin, external_id, status, error, dates, finished_at IS NOT NULL"
            " FROM pinpipe.batch_run ORDER BY run_id"
        ).fetchall()


def run_dag(data_dir: Path, dsn: str, day: str, **extra_env: str) -> dict:
    """``dag.test()`` of the run of ``day`` in an Airflow interpreter; its DAG_RESULT line."""
    python = airflow_python()
    if python is None:
        pytest.skip("Airflow not installed (set PINPIPE_AIRFLOW_PYTHON)")
    env = {
        **os.environ,
        "PATH": f"{Path(python).parent}:{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(data_dir / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "PINPIPE_DATA_DIR": str(data_dir),
        "PINPIPE_POSTGRES__DSN": dsn,
        "PINPIPE_BATCH__SHUFFLE_PARTITIONS": "2",
        "PINPIPE_BATCH__DRIVER_MEMORY": "1g",
        "PYSPARK_PYTHON": python,
        "PYSPARK_DRIVER_PYTHON": python,
        "PYTHONPATH": str(REPO),
        **extra_env,
    }
    done = subprocess.run(
        [python, str(Path(__file__).with_name("dag_runner.py")), str(REPO / "dags"), day],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=data_dir,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("DAG_RESULT ")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("DAG_RESULT "))
    assert result["import_errors"] == {}
    result["output"] = done.stdout[-3000:] + done.stderr[-3000:]
    return result


def test_dag_loads_and_runs_one_day(traversable_dir, fresh_dsn):
    lake = traversable_dir / "lake"
    write_small_lake(lake)
    result = run_dag(traversable_dir, fresh_dsn, "2024-03-02", PINPIPE_LAKE__ROOT=str(lake))
    assert result["state"] == "success", result["output"]
    assert result["data_interval_start"] == "2024-03-01"  # the run of 03-02 processes 03-01
    assert (lake / "clean" / "pin" / "dt=2024-03-01").is_dir()
    with psycopg.connect(fresh_dsn) as conn:
        rows = conn.execute("SELECT * FROM pinpipe.top_country_by_followers").fetchall()
    assert rows == [("Chad", 20_000)]
    # The DAG run is one batch run, as `pinpipe batch` records its own.
    [row] = batch_runs(fresh_dsn)
    assert row[1:] == ("airflow", result["run_id"], "success", None, "2024-03-01", True)


def test_a_failed_dag_run_is_recorded_failed(traversable_dir, fresh_dsn):
    # Spark cannot start: every clean task fails at once (the runner turns retries off).
    no_spark = {"PINPIPE_BATCH__SPARK_MASTER": "bogus://nowhere", "DAG_RUNNER_NO_RETRIES": "1"}
    result = run_dag(traversable_dir, fresh_dsn, "2024-03-02", **no_spark)
    assert result["state"] == "failed", result["output"]  # the recording teardown does not hide it
    [row] = batch_runs(fresh_dsn)
    failed = "failed tasks: answers, clean_geo, clean_pin, clean_user, publish, quality"
    assert row[1:] == ("airflow", result["run_id"], "failed", failed, "2024-03-01", True)


def test_a_dag_run_is_one_batch_run_restarted_by_a_retry(traversable_dir, fresh_dsn, monkeypatch):
    """The DAG's record steps without Airflow: what its setup and teardown tasks call."""
    monkeypatch.setenv("PINPIPE_DATA_DIR", str(traversable_dir))
    monkeypatch.setenv("PINPIPE_POSTGRES__DSN", fresh_dsn)
    day, airflow_run = date(2024, 3, 1), "scheduled__2024-03-02T00:00:00+00:00"

    run_id = record_start(day, airflow_run)
    assert run_id is not None
    assert batch_runs(fresh_dsn) == [
        (run_id, "airflow", airflow_run, "running", None, "2024-03-01", False)
    ]
    error = record_outcome(run_id, {
        "sink_flushed": "success", "record_start": "success", "clean_pin": "failed",
        "clean_geo": "success", "answers": "upstream_failed", "record_outcome": "running",
    })  # fmt: skip
    assert error == "failed tasks: answers, clean_pin"
    assert batch_runs(fresh_dsn) == [
        (run_id, "airflow", airflow_run, "failed", error, "2024-03-01", True)
    ]

    # Cleared and run again: the same row starts over, and now succeeds.
    assert record_start(day, airflow_run) == run_id
    assert batch_runs(fresh_dsn) == [
        (run_id, "airflow", airflow_run, "running", None, "2024-03-01", False)
    ]
    assert record_outcome(run_id, {"clean_pin": "success", "publish": "success"}) is None
    assert batch_runs(fresh_dsn) == [
        (run_id, "airflow", airflow_run, "success", None, "2024-03-01", True)
    ]
    # Another DAG run is another row.
    other = record_start(date(2024, 3, 2), "scheduled__2024-03-03T00:00:00+00:00")
    assert other not in (None, run_id) and len(batch_runs(fresh_dsn)) == 2
