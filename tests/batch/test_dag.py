"""The Airflow DAG: it imports cleanly and a real ``dag.test()`` runs one day of a small lake.

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
from pathlib import Path

import psycopg
import pytest

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


def test_dag_loads_and_runs_one_day(traversable_dir, pg_dsn):
    python = airflow_python()
    if python is None:
        pytest.skip("Airflow not installed (set PINPIPE_AIRFLOW_PYTHON)")
    lake = traversable_dir / "lake"
    write_small_lake(lake)
    airflow_home = traversable_dir / "airflow"
    env = {
        **os.environ,
        "PATH": f"{Path(python).parent}:{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "PINPIPE_DATA_DIR": str(traversable_dir),
        "PINPIPE_LAKE__ROOT": str(lake),
        "PINPIPE_POSTGRES__DSN": pg_dsn,
        "PINPIPE_BATCH__SHUFFLE_PARTITIONS": "2",
        "PINPIPE_BATCH__DRIVER_MEMORY": "1g",
        "PYSPARK_PYTHON": python,
        "PYSPARK_DRIVER_PYTHON": python,
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(
        [python, str(Path(__file__).with_name("dag_runner.py")), str(REPO / "dags"), "2024-03-02"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=traversable_dir,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("DAG_RESULT ")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("DAG_RESULT "))
    assert result["import_errors"] == {}
    assert result["state"] == "success", done.stdout[-3000:] + done.stderr[-3000:]
    assert result["data_interval_start"] == "2024-03-01"  # the run of 03-02 processes 03-01
    assert (lake / "clean" / "pin" / "dt=2024-03-01").is_dir()
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT * FROM pinpipe.top_country_by_followers").fetchall()
    assert rows == [("Chad", 20_000)]
