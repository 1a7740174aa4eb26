"""The embedded Spark cluster as a service: recorded, healthy, on loopback, found by 'embedded'."""

from __future__ import annotations

import os

import pytest

from pinpipe.services.spark_cluster import (
    MASTER,
    SparkClusterError,
    alive_workers,
    child_spark_env,
    cluster_status,
    master_state,
    resolve_master,
)
from pinpipe.services.state import read_record, record_names
from tests.cluster.conftest import WORKERS, cluster_settings

pytestmark = pytest.mark.integration


def test_master_and_workers_are_recorded_registered_and_on_loopback(spark_cluster):
    statuses = cluster_status(spark_cluster)

    assert [s.name for s in statuses] == [MASTER, "spark-worker-1", "spark-worker-2"]
    assert all(s.healthy for s in statuses), statuses
    assert f"{WORKERS} of {WORKERS} workers registered" in statuses[0].detail
    master = read_record(spark_cluster.run_dir, MASTER)
    assert master is not None and master.address.startswith("spark://127.0.0.1:")
    state = master_state(master.web_ui)
    assert state is not None and state["status"] == "ALIVE"
    workers = [read_record(spark_cluster.run_dir, name) for name in record_names(spark_cluster.run_dir, "spark-worker-")]
    # Each worker the master lists alive is one of the recorded ones, each in a process group
    # of its own (its executors join it; stopping the group leaves no JVM).
    assert alive_workers(state) == {w.address for w in workers}
    assert all(w.web_ui.startswith("http://127.0.0.1:") for w in workers)
    assert all(os.getpgid(r.pid) == r.pid for r in [master, *workers])
    assert {w["cores"] for w in state["workers"] if w["state"] == "ALIVE"} == {2}


def test_embedded_master_resolves_to_the_running_cluster(spark_cluster, traversable_dir):
    url = read_record(spark_cluster.run_dir, MASTER).address

    assert resolve_master(spark_cluster) == url
    # A child of `pinpipe up` gets the URL itself: a --spark-workers flag is not in its settings.
    assert child_spark_env(spark_cluster) == {"PINPIPE_BATCH__SPARK_MASTER": url}
    with pytest.raises(SparkClusterError, match="no embedded Spark cluster is running"):
        resolve_master(cluster_settings(traversable_dir))
    status = cluster_status(cluster_settings(traversable_dir))
    assert [(s.name, s.healthy, s.detail) for s in status] == [(MASTER, False, "not running")]


def test_a_lost_worker_is_reported_until_services_up_starts_it_again(spark_cluster):
    """A worker SIGKILLed (a lost machine) loses its record; status still counts it: the master
    is not healthy and the worker is listed as gone, on every call, until it is restarted."""
    from tests.cluster.conftest import kill_worker, restore_workers, wait_until

    pid = kill_worker(spark_cluster, "spark-worker-2")
    try:
        wait_until(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
                   30, "the worker gone")
        for _ in range(2):  # the first call forgets the stale record; the second must still know
            statuses = {s.name: s for s in cluster_status(spark_cluster)}
            assert not statuses[MASTER].healthy and "1 of 2 workers registered" in statuses[MASTER].detail
            assert not statuses["spark-worker-2"].healthy
            assert "its process is gone" in statuses["spark-worker-2"].detail
            assert statuses["spark-worker-1"].healthy
    finally:
        restore_workers(spark_cluster)
    assert all(s.healthy for s in cluster_status(spark_cluster))
