"""SIGKILL the stream job (a real ``python -m pinpipe.speed`` process) mid-run and restart it:
every natural key once, contents as cleaned, every record counted once in the metrics and
appended once to the lake's Delta tables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pinpipe.events import Table
from tests.conftest import checkout_env
from tests.speed.conftest import TEST_WARMUP_ROWS, create_topics
from tests.speed.pg import clean_rows, query, wait_for
from tests.speed.records import clean_geo, clean_pin, clean_user, geo, pin, user

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

KEYS = 400
VERSIONS = 3


def start_job(bootstrap: str, dsn: str, prefix: str, workdir: Path) -> subprocess.Popen:
    env = checkout_env(**{
        "PINPIPE_DATA_DIR": str(workdir),
        "PINPIPE_BROKER__BOOTSTRAP_SERVERS": bootstrap,
        "PINPIPE_BROKER__TOPIC_PREFIX": prefix,
        "PINPIPE_POSTGRES__DSN": dsn,
        "PINPIPE_BATCH__DRIVER_MEMORY": "1g",
        "PINPIPE_BATCH__SHUFFLE_PARTITIONS": "2",
        "PINPIPE_SPEED__MAX_OFFSETS_PER_TRIGGER": "150",  # many small batches to die in
        "PINPIPE_SPEED__WARMUP_ROWS": str(TEST_WARMUP_ROWS),
    })
    log = open(workdir / "stream.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "pinpipe.speed", "--trigger-s", "0.5",
         "--checkpoint-dir", str(workdir / "checkpoint")],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=workdir,
    )


def kill_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass
    process.wait(timeout=60)


def log_tail(workdir: Path) -> str:
    return (workdir / "stream.log").read_text(errors="replace")[-4000:]


def batches(dsn: str) -> int:
    return query(dsn, "SELECT count(*) AS n FROM pinpipe.stream_batch")[0]["n"]


def pin_events(dsn: str) -> int:
    return query(dsn, "SELECT coalesce(sum(events), 0)::int AS n FROM pinpipe.category_per_minute")[0]["n"]


def test_kill_and_restart_writes_every_key_once(kafka_bootstrap, fresh_dsn, topic_prefix, produce,
                                                traversable_dir):
    create_topics(kafka_bootstrap, topic_prefix)
    for version in range(VERSIONS):  # the last version of each key arrives last
        produce(topic_prefix, Table.PIN, [pin(i, f"u-{i:04d}", title=f"v{version}") for i in range(KEYS)])
    produce(topic_prefix, Table.GEO, [geo(i) for i in range(KEYS)])
    produce(topic_prefix, Table.USER, [user(i) for i in range(KEYS)])
    produce(topic_prefix, Table.PIN, [b"\x00poison"])
    total_pins = KEYS * VERSIONS

    job = start_job(kafka_bootstrap, fresh_dsn, topic_prefix, traversable_dir)
    try:
        try:
            wait_for(lambda: batches(fresh_dsn) >= 2, timeout_s=300, what="two committed batches")
        except AssertionError as exc:
            raise AssertionError(log_tail(traversable_dir)) from exc
        assert job.poll() is None
    finally:
        kill_group(job, signal.SIGKILL)
    assert pin_events(fresh_dsn) < total_pins, "the job finished before it was killed"
    first_run = (traversable_dir / "stream.log").read_text(errors="replace")
    assert "warmed up on generated records" in first_run  # a new query warms up ...

    job = start_job(kafka_bootstrap, fresh_dsn, topic_prefix, traversable_dir)
    try:
        try:
            wait_for(lambda: len(clean_rows(fresh_dsn, "user")) == KEYS and pin_events(fresh_dsn) >= total_pins
                     and len(clean_rows(fresh_dsn, "geo")) == KEYS, timeout_s=300, what="every record")
        except AssertionError as exc:
            raise AssertionError(log_tail(traversable_dir)) from exc
        time.sleep(2)  # let any further (empty) batch pass
    finally:
        kill_group(job, signal.SIGTERM)
    log = log_tail(traversable_dir)
    second_run = (traversable_dir / "stream.log").read_text(errors="replace")[len(first_run):]
    # ... a resumed one starts on its waiting records at once
    assert "resuming the checkpoint's query: no warm-up" in second_run
    assert "warmed up on generated records" not in second_run

    assert clean_rows(fresh_dsn, "pin") == [clean_pin(i, f"u-{i:04d}", title=f"v{VERSIONS - 1}") for i in range(KEYS)]
    assert clean_rows(fresh_dsn, "geo") == [clean_geo(i) for i in range(KEYS)]
    assert clean_rows(fresh_dsn, "user") == [clean_user(i) for i in range(KEYS)]
    assert pin_events(fresh_dsn) == total_pins, log  # no record counted twice
    letters = query(fresh_dsn, "SELECT reason FROM pinpipe.dead_letter")
    assert letters == [{"reason": "not a JSON object of pin field types"}]
    ids = [r["batch_id"] for r in query(fresh_dsn, "SELECT batch_id FROM pinpipe.stream_batch ORDER BY 1")]
    assert ids == list(range(len(ids)))  # one query, batches without holes

    from deltalake import DeltaTable

    for table, records in ((Table.PIN, total_pins), (Table.GEO, KEYS), (Table.USER, KEYS)):
        stored = DeltaTable(str(traversable_dir / "lake" / "stream" / table.value)).to_pyarrow_dataset()
        arrivals = stored.to_table(columns=["kafka_partition", "kafka_offset"]).to_pylist()
        assert len(arrivals) == records and len({tuple(a.values()) for a in arrivals}) == records, table
