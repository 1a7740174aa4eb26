"""The speed layer's PostgreSQL writer alone: one micro-batch's transaction, by batch size.

Starts an embedded PostgreSQL (or uses ``PINPIPE_POSTGRES__DSN``, where it creates and drops a
database ``bench_<random>`` per configuration), builds micro-batches the
shape the stream job hands over (clean Arrow tables of pin, geo and user with their arrival
columns, rows drawn from the generated source tables, so keys repeat as in a real stream) and
times :meth:`pinpipe.speed.writer.PostgresWriter.write` per batch: COPY into staging, upserts,
metrics, commit. Prints one table with a row per (writer, records per table): median and p95
seconds per batch, records per second, and the ratio against the baseline run in the same
invocation:

``rows`` (baseline)
    the writer with its COPY fed row by row from Python values (``to_pylist`` and
    ``copy.write_row``), as pinpipe did before Arrow encoded the COPY data itself.

Each configuration writes into a fresh database, after two batches not timed.

::

    .venv/bin/python bench/bench_writer.py --records 2000 6000 18000 --batches 12
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pyarrow as pa
from psycopg.conninfo import make_conninfo

from pinpipe.config import Settings
from pinpipe.events import Table
from pinpipe.services.resolve import postgres_dsn
from pinpipe.source.generator import generate_tables
from pinpipe.speed.writer import PostgresWriter
from pinpipe.store.schema import apply_migrations

TOPICS = {table: f"bench.{table.value}" for table in Table}


def batch_tables(tables, table: Table, first: int, count: int, at: datetime) -> pa.Table:
    """``count`` clean rows of ``table`` as the stream hands them over (arrival columns last)."""
    rows = tables.rows(table)
    picked = [rows[(first + i * 7919) % len(rows)] for i in range(count)]
    utc = pa.timestamp("us", tz="UTC")
    if table is Table.PIN:
        text = ("title", "description", "poster_name", "tag_list", "is_image_or_video", "image_src", "category")
        data = {
            "ind": pa.array([r["index"] for r in picked], pa.int32()),
            "unique_id": [r["unique_id"] for r in picked],
            **{name: [r[name] for r in picked] for name in text},
            "follower_count": pa.array([len(r["unique_id"]) * 1000 for r in picked], pa.int64()),
            "save_location": [r["save_location"].removeprefix("Local save in ") for r in picked],
            "downloaded": pa.array([r["downloaded"] for r in picked], pa.int32()),
        }
    elif table is Table.GEO:
        data = {
            "ind": pa.array([r["ind"] for r in picked], pa.int32()),
            "country": [r["country"] for r in picked],
            "coordinates": pa.array([[r["latitude"], r["longitude"]] for r in picked], pa.list_(pa.float64())),
            "timestamp": pa.array([r["timestamp"].replace(tzinfo=UTC) for r in picked], utc),
        }
    else:
        data = {
            "ind": pa.array([r["ind"] for r in picked], pa.int32()),
            "user_name": [f"{r['first_name']} {r['last_name']}" for r in picked],
            "age": pa.array([r["age"] for r in picked], pa.int32()),
            "date_joined": pa.array([r["date_joined"].replace(tzinfo=UTC) for r in picked], utc),
        }
    data["broker_timestamp"] = pa.array([at + timedelta(microseconds=i) for i in range(count)], utc)
    data["kafka_partition"] = pa.array([i % 3 for i in range(count)], pa.int32())
    data["kafka_offset"] = pa.array(range(first, first + count), pa.int64())
    return pa.table(data)


def copy_row_by_row(self, cur, target, columns, table) -> None:
    """The baseline COPY: Python values, one ``write_row`` each."""
    from psycopg import sql

    if not table.num_rows:
        return
    values = [table[name].to_pylist() for name in columns]
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(target), names)) as copy:
        for row in zip(*values):
            copy.write_row(row)


def run(admin_dsn: str, tables, records: int, batches: int, baseline: bool) -> dict:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = make_conninfo(admin_dsn, dbname=name)
    original = PostgresWriter._copy
    if baseline:
        PostgresWriter._copy = copy_row_by_row
    try:
        apply_migrations(dsn)
        writer = PostgresWriter(dsn, lateness_s=600)
        now = datetime.now(UTC)
        seconds = []
        for n in range(batches + 2):
            at = now + timedelta(seconds=n)
            batch = {t: batch_tables(tables, t, n * records, records, at) for t in Table}
            began = time.perf_counter()
            writer.write("bench", n, batch, None, TOPICS)
            if n >= 2:
                seconds.append(time.perf_counter() - began)
        writer.close()
    finally:
        PostgresWriter._copy = original
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    seconds.sort()
    median = statistics.median(seconds)
    return {
        "median": median,
        "p95": seconds[min(len(seconds) - 1, int(len(seconds) * 0.95))],
        "rate": 3 * records / median,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, nargs="+", default=[2000, 6000, 18000],
                        help="records per table and batch")
    parser.add_argument("--batches", type=int, default=12, help="timed batches per configuration")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="pinpipe-bench-writer-"))
    os.chmod(data_dir, 0o755)  # the embedded server may run as another user
    settings = Settings(data_dir=data_dir)  # PINPIPE_* still apply (a configured DSN is used)
    tables = generate_tables(rows=11_154)
    results = []
    try:
        with postgres_dsn(settings) as dsn:
            for records in args.records:
                for label, baseline in (("pinpipe (Arrow CSV COPY)", False), ("baseline (rows)", True)):
                    print(f"[{label}] {records} records per table ...", file=sys.stderr)
                    results.append((label, records, run(dsn, tables, records, args.batches, baseline)))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)  # its PostgreSQL data: ~250 MB a run
    print("| writer | records/table | s per batch p50 | p95 | records/s | p50 ratio |")
    print("|---|---|---|---|---|---|")
    for label, records, result in results:
        base = next(r for lab, n, r in results if n == records and lab.startswith("baseline"))
        print(f"| {label} | {records:,} | {result['median']:.3f} | {result['p95']:.3f} | {result['rate']:,.0f} |"
              f" {result['median'] / base['median']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
