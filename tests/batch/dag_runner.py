"""Run by the DAG test with an interpreter that has Airflow: load the DAG, run one day.

Usage: python dag_runner.py <dags folder> <run date YYYY-MM-DD> (the run after the day). Prints one JSON line with the
import errors, the run's final state and its run id; pinpipe's settings come from PINPIPE_* variables.
With DAG_RUNNER_NO_RETRIES set, failed tasks are not retried (dag.test() would wait out the delay).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime


def main() -> None:
    folder, day = sys.argv[1], sys.argv[2]
    subprocess.run(["airflow", "db", "migrate"], check=True, capture_output=True)
    from airflow.models import DagBag

    bag = DagBag(dag_folder=folder)
    errors = {str(k): str(v) for k, v in bag.import_errors.items()}
    state = interval = run_id = None
    if not errors:
        dag = bag.get_dag("pinpipe_batch")
        if os.environ.get("DAG_RUNNER_NO_RETRIES"):
            for task in dag.tasks:
                task.retries = 0
        logical = datetime.fromisoformat(day).replace(tzinfo=UTC)
        run = dag.test(logical_date=logical)
        state = str(getattr(run.state, "value", run.state))
        interval = run.data_interval_start.date().isoformat()
        run_id = run.run_id
    result = {
        "import_errors": errors,
        "state": state,
        "data_interval_start": interval,
        "run_id": run_id,
    }
    print("DAG_RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
