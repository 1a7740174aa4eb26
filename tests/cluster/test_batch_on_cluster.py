"""The batch job on the 2-worker cluster: its tasks on executors, a worker SIGKILLed mid-run, and
the same clean tables as local[2] and the independent DuckDB answers."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pinpipe.batch.answers import ANSWERS
from pinpipe.events import Table
from pinpipe.spark.event_log import applications
from tests.batch.lakes import write_generated_lake
from tests.batch.reference import reference_answers
from tests.cluster.conftest import job_env, kill_worker, restore_workers, start, wait_until
from tests.conftest import make_traversable_dir

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROWS = 1500


def clean_snapshot(lake: Path, table: str) -> list[tuple]:
    rows = pq.read_table(lake / "clean" / table).to_pylist()
    return sorted(tuple(str(v) for v in row.values()) for row in rows)


def answer_rows(lake: Path) -> dict[str, list[tuple]]:
    def rounded(rows) -> list[tuple]:
        return sorted(tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in rows)

    return {name: rounded(tuple(r.values()) for r in pq.read_table(lake / "answers" / name).to_pylist())
            for name in ANSWERS}


@pytest.fixture(scope="module")
def local_reference(pg_dsn) -> Iterator[tuple[Path, dict[str, list[tuple]]]]:
    """A generated lake (two days, duplicates, three unparseable records), and its clean tables
    from the batch job on local[2]."""
    base = make_traversable_dir("pinpipe-cluster-lake-")
    lake = base / "lake"
    write_generated_lake(lake, rows=ROWS)
    pristine = base / "raw-only"
    shutil.copytree(lake, pristine)
    env = {**os.environ, "PINPIPE_DATA_DIR": str(base), "PINPIPE_LAKE__ROOT": str(lake),
           "PINPIPE_POSTGRES__DSN": pg_dsn, "PINPIPE_BATCH__SPARK_MASTER": "local[2]",
           "PINPIPE_BATCH__DRIVER_MEMORY": "1g", "PINPIPE_BATCH__SHUFFLE_PARTITIONS": "2"}
    process = start(["-m", "pinpipe.cli", "batch", "--all"], env, base / "local.log")
    assert process.wait(timeout=300) == 0, (base / "local.log").read_text()[-3000:]
    yield pristine, {t.value: clean_snapshot(lake, t.value) for t in Table}
    shutil.rmtree(base, ignore_errors=True)


def test_a_worker_killed_mid_run_and_the_batch_still_equals_local(spark_cluster, local_reference, pg_dsn,
                                                                  traversable_dir):
    pristine, local_clean = local_reference
    lake = traversable_dir / "lake"
    shutil.copytree(pristine, lake)
    log = traversable_dir / "batch.log"
    began = time.time()
    env = job_env(spark_cluster, PINPIPE_LAKE__ROOT=str(lake), PINPIPE_POSTGRES__DSN=pg_dsn)
    process = start(["-m", "pinpipe.cli", "batch", "--all"], env, log)
    try:
        def batch_app():
            found = [a for a in applications(spark_cluster, began) if a.name == "pinpipe-batch"]
            return found[-1] if found and sum(found[-1].tasks.values()) >= 3 else None

        # Mid-run: the job has finished a few tasks on the executors (and has many more to run).
        at_kill = wait_until(batch_app, 180, "the batch job's first tasks on the cluster")
        assert process.poll() is None, "the batch job ended before the worker was killed"
        kill_worker(spark_cluster)
        code = process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
        restore_workers(spark_cluster)
    assert code == 0, log.read_text()[-4000:]

    app = [a for a in applications(spark_cluster, began) if a.name == "pinpipe-batch"][-1]
    assert app.master.startswith("spark://127.0.0.1:")
    assert "driver" not in app.tasks and len(app.tasks) >= 2, app.describe()  # ran on executors only
    assert app.removed, f"no executor was lost: {app.describe()}"
    assert sum(app.tasks.values()) > sum(at_kill.tasks.values()) + 10, app.describe()  # ran on after it
    # Nothing lost, nothing doubled: what local[2] made of the same raw files, and the answers
    # DuckDB computes from them independently.
    for table in Table:
        assert clean_snapshot(lake, table.value) == local_clean[table.value], table
    expected = reference_answers(pristine)
    got = answer_rows(lake)
    for name in ANSWERS:
        assert got[name] and got[name] == sorted(
            tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in expected[name]), name
