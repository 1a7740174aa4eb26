"""The stream job on the 2-worker cluster: the Kafka source's read tasks run in executor processes
(not the driver), and a worker SIGKILLed mid-stream loses and duplicates nothing."""

from __future__ import annotations

import signal
import time

import pytest

from pinpipe.events import Table
from pinpipe.spark.event_log import applications
from tests.cluster.conftest import (
    job_env,
    kill_worker,
    restore_workers,
    start,
    stop_group,
    wait_until,
)
from tests.speed.conftest import TEST_WARMUP_ROWS, create_topics
from tests.speed.pg import clean_rows, query
from tests.speed.records import clean_geo, clean_pin, clean_user, geo, pin, user

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

KEYS = 400
VERSIONS = 3


def batches(dsn: str) -> int:
    try:
        return query(dsn, "SELECT count(*) AS n FROM pinpipe.stream_batch")[0]["n"]
    except Exception:  # the schema is not migrated yet
        return 0


def pin_events(dsn: str) -> int:
    return query(dsn, "SELECT coalesce(sum(events), 0)::int AS n FROM pinpipe.category_per_minute")[0]["n"]


def test_a_worker_killed_mid_stream_loses_and_duplicates_nothing(spark_cluster, kafka_bootstrap, fresh_dsn,
                                                                 topic_prefix, produce, traversable_dir):
    create_topics(kafka_bootstrap, topic_prefix)
    for version in range(VERSIONS):  # the last version of each key arrives last
        produce(topic_prefix, Table.PIN, [pin(i, f"u-{i:04d}", title=f"v{version}") for i in range(KEYS)])
    produce(topic_prefix, Table.GEO, [geo(i) for i in range(KEYS)])
    produce(topic_prefix, Table.USER, [user(i) for i in range(KEYS)])
    total_pins = KEYS * VERSIONS
    lake, log = traversable_dir / "lake", traversable_dir / "stream.log"
    env = job_env(
        spark_cluster,
        PINPIPE_BROKER__BOOTSTRAP_SERVERS=kafka_bootstrap, PINPIPE_BROKER__TOPIC_PREFIX=topic_prefix,
        PINPIPE_POSTGRES__DSN=fresh_dsn, PINPIPE_LAKE__ROOT=str(lake),
        PINPIPE_SPEED__MAX_OFFSETS_PER_TRIGGER="150",  # many small batches to lose a worker in
        PINPIPE_SPEED__WARMUP_ROWS=str(TEST_WARMUP_ROWS),
    )  # fmt: skip
    began = time.time()
    job = start(["-m", "pinpipe.speed", "--trigger-s", "0.5", "--checkpoint-dir",
                 str(traversable_dir / "checkpoint")], env, log)
    try:
        try:
            wait_until(lambda: batches(fresh_dsn) >= 2 or job.poll() is not None, 240, "two committed batches")
            assert job.poll() is None, "the stream job exited"
            assert pin_events(fresh_dsn) < total_pins, "the stream took everything before the worker was killed"
            kill_worker(spark_cluster)
            wait_until(lambda: (len(clean_rows(fresh_dsn, "user")) == KEYS and pin_events(fresh_dsn) >= total_pins
                                and len(clean_rows(fresh_dsn, "geo")) == KEYS) or job.poll() is not None,
                       240, "every record after the worker was lost")
            assert job.poll() is None, "the stream job exited"
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text(errors='replace')[-4000:]}") from exc
    finally:
        stop_group(job, signal.SIGTERM)  # it finishes the micro-batch it runs, then stops
        restore_workers(spark_cluster)

    assert clean_rows(fresh_dsn, "pin") == [clean_pin(i, f"u-{i:04d}", title=f"v{VERSIONS - 1}") for i in range(KEYS)]
    assert clean_rows(fresh_dsn, "geo") == [clean_geo(i) for i in range(KEYS)]
    assert clean_rows(fresh_dsn, "user") == [clean_user(i) for i in range(KEYS)]
    assert pin_events(fresh_dsn) == total_pins  # no record counted twice
    ids = [r["batch_id"] for r in query(fresh_dsn, "SELECT batch_id FROM pinpipe.stream_batch ORDER BY 1")]
    assert ids == list(range(len(ids)))

    from deltalake import DeltaTable

    for table, records in ((Table.PIN, total_pins), (Table.GEO, KEYS), (Table.USER, KEYS)):
        stored = DeltaTable(str(lake / "stream" / table.value)).to_pyarrow_dataset()
        arrivals = stored.to_table(columns=["kafka_partition", "kafka_offset"]).to_pylist()
        assert len(arrivals) == records and len({tuple(a.values()) for a in arrivals}) == records, table

    # Spark's own record: every task (the Kafka source's reads: a micro-batch is one stage
    # without a shuffle) ran in an executor process, on both workers' executors; one was lost.
    app = [a for a in applications(spark_cluster, began) if a.name == "pinpipe-stream"][-1]
    assert app.master.startswith("spark://127.0.0.1:")
    assert "driver" not in app.tasks and len(app.tasks) >= 2, app.describe()
    assert app.removed, app.describe()
