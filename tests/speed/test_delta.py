"""The stream's Delta tables: appended exactly once (replays, SIGKILL), typed, partitioned by day,
kept tidy, read by ``pinpipe sql``, and equal to PostgreSQL and the batch layer, value for value."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from pinpipe.config import Settings
from pinpipe.events import Table
from pinpipe.serve.reconcile import compare_layers, compare_stream_tables
from pinpipe.speed.delta import DeltaWriter, open_stream_table, table_schema
from tests.lake.test_exactly_once import S3_CREDENTIALS, moto_endpoint  # noqa: F401 (a fixture)
from tests.speed import delta_loop
from tests.speed.conftest import create_topics, speed_settings
from tests.speed.pg import CLEAN_COLUMNS, clean_rows, wait_for
from tests.speed.records import clean_geo, clean_pin, clean_user, geo, pin, user

T0 = datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC)


def users(*rows: tuple[int, str | None, int], at: datetime = T0) -> pa.Table:
    """Clean user rows ``(ind, user_name, offset)`` with every column the stream job hands over."""
    return delta_loop.clean_table(Table.USER, {
        "ind": pa.array([r[0] for r in rows], pa.int32()),
        "user_name": pa.array([r[1] for r in rows], pa.string()),
        "broker_timestamp": pa.array([at + timedelta(seconds=r[2]) for r in rows], pa.timestamp("us", tz="UTC")),
        "kafka_partition": pa.array([0] * len(rows), pa.int32()),
        "kafka_offset": pa.array([r[2] for r in rows], pa.int64()),
    })  # fmt: skip


def lake_settings(lake: Path, **speed) -> Settings:
    return Settings(data_dir=lake.parent, lake={"root": str(lake)}, speed=speed)


def stored(settings: Settings, table: Table) -> list[dict]:
    delta = open_stream_table(settings, table)
    rows = delta.to_pyarrow_dataset().to_table().to_pylist()
    return sorted(rows, key=lambda r: r["kafka_offset"])


def test_a_replayed_batch_adds_nothing(tmp_path):
    settings = lake_settings(tmp_path / "lake")
    writer = DeltaWriter.from_settings(settings)
    first = writer.write("q", 0, {Table.USER: users((1, "Ada", 0), (2, "Bo", 1))})
    writer.write("q", 1, {Table.USER: users((1, "Ada L.", 2))})
    version = open_stream_table(settings, Table.USER).version()

    again = writer.write("q", 1, {Table.USER: users((1, "Ada L.", 2))})
    older = DeltaWriter.from_settings(settings).write("q", 0, {Table.USER: users((1, "Ada", 0), (2, "Bo", 1))})

    assert first.appended == {"user": 2}
    assert (again.appended, again.replayed, older.replayed) == ({}, ["user"], ["user"])
    table = open_stream_table(settings, Table.USER)
    assert (table.version(), table.transaction_version("q")) == (version, 1)
    assert [(r["ind"], r["user_name"]) for r in stored(settings, Table.USER)] == [(1, "Ada"), (2, "Bo"), (1, "Ada L.")]
    # Another query (a new checkpoint) is another application: its batch 0 is new.
    assert DeltaWriter.from_settings(settings).write("q2", 0, {Table.USER: users((3, "Cy", 3))}).appended == {"user": 1}


def test_types_stay_put_and_rows_are_partitioned_by_the_broker_day(tmp_path):
    settings = lake_settings(tmp_path / "lake")
    writer = DeltaWriter.from_settings(settings)
    nulls = users((1, None, 0), (None, "no key", 1), (2, None, 2))  # user_name null in every kept row
    nulls = nulls.set_column(nulls.schema.get_field_index("age"), "age", pa.nulls(3))  # typed null

    outcome = writer.write("q", 0, {Table.USER: nulls, Table.PIN: users().slice(0, 0)})

    assert outcome.appended == {"user": 2}  # a blank key is a dead letter; no commit for no rows
    assert open_stream_table(settings, Table.PIN) is None
    table = open_stream_table(settings, Table.USER)
    assert pa.schema(table.schema().to_arrow()) == table_schema(Table.USER)
    assert table.metadata().partition_columns == ["dt"]
    rows = stored(settings, Table.USER)
    assert [(r["ind"], r["age"], r["dt"].isoformat()) for r in rows] == [
        (1, None, "2026-12-01"), (2, None, "2026-12-02"),  # 23:59:59, then two seconds later
    ]
    assert sorted(p.name for p in (tmp_path / "lake" / "stream" / "user").glob("dt=*")) == [
        "dt=2026-12-01", "dt=2026-12-02",
    ]


def test_upkeep_compacts_checkpoints_and_vacuums_and_every_row_stays(tmp_path):
    settings = lake_settings(tmp_path / "lake", delta_compact_every_batches=1, delta_checkpoint_every_batches=1,
                             delta_vacuum_every_batches=1, delta_vacuum_retention_hours=0)  # fmt: skip
    writer = DeltaWriter.from_settings(settings)
    steps = []
    for n in range(4):
        if n == 3:  # the files of a write killed before its commit: in no log entry
            (tmp_path / "lake" / "stream" / "user" / "dt=2026-12-02" / "part-orphan.parquet").write_bytes(b"x")
        steps.append(writer.write("q", n, {Table.USER: users((n, f"u{n}", 10 * n), (n, f"v{n}", 10 * n + 1))}).upkeep)

    assert steps[0] == {}  # nothing before the first interval ends
    assert list(steps[3]) == ["compact user", "checkpoint user", "vacuum user"]
    table = open_stream_table(settings, Table.USER)
    referenced = {Path(uri.removeprefix("file://")).name for uri in table.file_uris()}
    on_disk = {p.name for p in (tmp_path / "lake" / "stream" / "user").glob("dt=*/*.parquet")}
    assert len(referenced) == 2 and on_disk == referenced  # one file a day; the rest (and the orphan) vacuumed
    assert (tmp_path / "lake" / "stream" / "user" / "_delta_log" / "_last_checkpoint").exists()
    assert [r["kafka_offset"] for r in stored(settings, Table.USER)] == [0, 1, 10, 11, 20, 21, 30, 31]


def test_the_tables_take_their_upkeep_turns_in_different_batches(tmp_path):
    settings = lake_settings(tmp_path / "lake", delta_compact_every_batches=9, delta_checkpoint_every_batches=0,
                             delta_vacuum_every_batches=0)  # fmt: skip
    writer = DeltaWriter.from_settings(settings)
    for table in Table:
        writer.table(table)

    turns = {}
    for n in range(30):
        if done := writer.upkeep(n):
            turns[n] = list(done)

    assert turns == {9: ["compact pin"], 12: ["compact user"], 15: ["compact geo"], 18: ["compact pin"],
                     21: ["compact user"], 24: ["compact geo"], 27: ["compact pin"]}  # fmt: skip


@pytest.mark.integration
def test_an_s3_lake_through_storage_options(moto_endpoint):  # noqa: F811
    import uuid

    import pyarrow.fs as pafs

    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    pafs.S3FileSystem(endpoint_override=moto_endpoint.removeprefix("http://"), scheme="http",
                      access_key="testing", secret_key="testing", region="us-east-1",
                      allow_bucket_creation=True).create_dir(bucket)  # fmt: skip
    credentials = {name.removeprefix("PINPIPE_LAKE__").lower(): value for name, value in S3_CREDENTIALS.items()}
    settings = Settings(lake={"root": f"s3://{bucket}/pinpipe", "s3_endpoint_url": moto_endpoint, **credentials})
    writer = DeltaWriter.from_settings(settings)

    writer.write("q", 0, {Table.USER: users((1, "Ada", 0))})
    replay = DeltaWriter.from_settings(settings).write("q", 0, {Table.USER: users((1, "Ada", 0))})

    assert replay.replayed == ["user"]
    assert [(r["ind"], r["user_name"]) for r in stored(settings, Table.USER)] == [(1, "Ada")]
    assert writer.uris[Table.USER] == f"s3://{bucket}/pinpipe/stream/user"


@pytest.mark.integration
def test_sigkill_at_random_moments_then_replay_leaves_every_batch_once(tmp_path):
    lake, state = tmp_path / "stream", tmp_path / "state"
    state.mkdir()
    batches, rows = 80, 20
    command = [sys.executable, delta_loop.__file__, str(lake), str(state), str(batches), str(rows), "3"]
    rng = random.Random(int.from_bytes(os.urandom(4)))
    kills = 0
    while kills < 10:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"
        try:
            process.wait(timeout=rng.uniform(0.02, 0.4))
            break  # it finished before its kill
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr

    assert kills >= 6, "the loop finished before it was killed often enough"
    for table in (Table.PIN, Table.USER):
        delta = DeltaTable(str(lake / table.value))  # loads: the log and its checkpoints are whole
        data = delta.to_pyarrow_dataset().to_table()
        per_batch = Counter(offset // rows for offset in data["kafka_offset"].to_pylist())
        assert per_batch == {n: rows for n in range(batches)}, table  # every batch, exactly once
        assert sorted(data["kafka_offset"].to_pylist()) == list(range(batches * rows))
        assert delta.transaction_version(delta_loop.QUERY_ID) == batches - 1


@pytest.mark.integration
def test_sql_sees_the_stream_tables_and_they_equal_postgres(tmp_path, fresh_dsn):
    import psycopg

    from pinpipe.lakesql import run_sql
    from pinpipe.store.schema import apply_migrations

    settings = lake_settings(tmp_path / "lake")
    writer = DeltaWriter.from_settings(settings)
    writer.write("q", 0, {Table.USER: users((1, "Ada", 5), (2, "Bo", 6))})
    writer.write("q", 1, {Table.USER: users((1, "Ada L.", 7), (2, "Bo", 8), (3, "Cy", 9))})
    apply_migrations(fresh_dsn)
    with psycopg.connect(fresh_dsn) as conn:
        for ind, name, offset in ((1, "Ada L.", 7), (2, "Bo", 8), (3, "Cyril", 9), (4, "Di", 10)):
            conn.execute(
                'INSERT INTO pinpipe."user" (ind, user_name, broker_timestamp, kafka_partition, kafka_offset)'
                " VALUES (%s, %s, %s, 0, %s)", (ind, name, T0 + timedelta(seconds=offset), offset),
            )

    assert run_sql(settings, "SELECT count(*), count(DISTINCT ind) FROM stream_user").rows == [(5, 3)]
    assert run_sql(settings, "SELECT dt::VARCHAR, count(*) FROM stream_user GROUP BY ALL").rows == [("2026-12-02", 5)]
    by_table = {c.table: c for c in compare_stream_tables(settings, fresh_dsn)}
    user = by_table[Table.USER]
    assert (user.batch_rows, user.speed_rows, user.equal_rows) == (3, 4, 2)
    assert user.differences == [
        "ind 3: user_name: Delta table 'Cy' / PostgreSQL 'Cyril'",
        "ind 4: only in PostgreSQL",
    ]
    assert by_table[Table.PIN].ok and by_table[Table.PIN].batch_rows == 0  # no table yet: no rows


def kafka_to_raw(bootstrap: str, prefix: str, lake: Path) -> None:
    """Every record of the test's topics into the lake's raw layer, as the lake sink lays it out."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from pinpipe.events import topic_name
    from tests.batch.rawfiles import write_raw

    topics = {topic_name(prefix, table): table for table in Table}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t-raw", "enable.partition.eof": True,
                         "enable.auto.commit": False})  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, p, 0) for topic in topics for p in (0, 1)])
        read: dict[tuple[str, int], list] = {(topic, p): [] for topic in topics for p in (0, 1)}
        ended: set[tuple[str, int]] = set()
        while len(ended) < len(read):
            for message in consumer.consume(100, timeout=1):
                if message.error() is not None:
                    assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                    ended.add((message.topic(), message.partition()))
                else:
                    read[(message.topic(), message.partition())].append(message)
    finally:
        consumer.close()
    for (topic, partition), messages in read.items():
        if messages:
            offsets = [m.offset() for m in messages]
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))  # as write_raw lays them
            write_raw(lake, topics[topic], [m.value().decode() for m in messages], partition=partition,
                      first_offset=offsets[0], day=datetime.now(UTC).date().isoformat(),
                      timestamps=[datetime.fromtimestamp(m.timestamp()[1] / 1000, UTC) for m in messages])  # fmt: skip


def latest_per_key(rows: list[dict], table: Table) -> list[dict]:
    """The last arrival of each key (broker time, then offset, then partition), clean columns only."""
    latest: dict = {}
    for row in sorted(rows, key=lambda r: (r["broker_timestamp"], r["kafka_offset"], r["kafka_partition"])):
        latest[row[table.natural_key]] = {c: row[c] for c in CLEAN_COLUMNS[table.value]}
    return [latest[key] for key in sorted(latest)]


@pytest.mark.integration
def test_the_stream_appends_every_record_once_and_its_latest_rows_equal_postgres_and_the_batch_layer(
    spark, kafka_bootstrap, fresh_dsn, topic_prefix, produce, traversable_dir
):
    from pinpipe.batch.job import clean_table
    from pinpipe.speed.job import start_stream

    create_topics(kafka_bootstrap, topic_prefix)
    lake = traversable_dir / "lake"
    settings = speed_settings(topic_prefix, lake=str(lake))
    produce(topic_prefix, Table.PIN, [pin(1, "u-1", title="first version"), pin(2, "u-2", follower_count="1M"),
                                      b"{not json"])  # a dead letter
    produce(topic_prefix, Table.PIN, [pin(1, "u-1", title="second version")])  # arrives last
    produce(topic_prefix, Table.GEO, [geo(1), geo(2, "Antarctica (the territory South of 60 deg S)"), geo(1, "Chad")])
    produce(topic_prefix, Table.USER, [user(1), user(2, "Grace", "Hopper", 52)])

    def in_delta() -> dict[str, int]:
        tables = {t: open_stream_table(settings, t) for t in Table}
        return {t.value: d.to_pyarrow_dataset().count_rows() if d else 0 for t, d in tables.items()}

    query, handler = start_stream(spark, settings, kafka_bootstrap, fresh_dsn,
                                  checkpoint_dir=str(traversable_dir / "ckpt"))  # fmt: skip
    try:
        wait_for(lambda: in_delta() == {"pin": 3, "geo": 3, "user": 2}, what="the Delta rows", query=query)
        assert query.exception() is None
    finally:
        query.stop()
        handler.close()

    stored = {t: open_stream_table(settings, t).to_pyarrow_dataset().to_table().to_pylist() for t in Table}
    for table, rows in stored.items():  # every record that parsed with its key, once
        assert len({(r["kafka_partition"], r["kafka_offset"]) for r in rows}) == len(rows), table
    assert sorted(r["title"] for r in stored[Table.PIN]) == ["Ideas for the garden", "first version", "second version"]
    expected = {
        Table.PIN: [clean_pin(1, "u-1", title="second version"), clean_pin(2, "u-2", follower_count=1_000_000)],
        Table.GEO: [clean_geo(1, "Chad"), clean_geo(2, "Antarctica (the territory South of 60 deg S)")],
        Table.USER: [clean_user(1), clean_user(2, "Grace Hopper", 52)],
    }
    for table, rows in stored.items():
        assert latest_per_key(rows, table) == expected[table] == clean_rows(fresh_dsn, table.value), table

    # The batch layer over the same Kafka records: its clean rows equal both, value for value.
    kafka_to_raw(kafka_bootstrap, topic_prefix, lake)
    for table in Table:
        clean_table(settings, table, None, spark=spark)
    for comparison in (*compare_layers(settings, fresh_dsn), *compare_stream_tables(settings, fresh_dsn)):
        assert comparison.ok and comparison.equal_rows == 2, comparison
