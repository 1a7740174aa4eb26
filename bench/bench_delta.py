"""The stream's Delta output: what it adds to a micro-batch, and what its upkeep costs.

Default: micro-batches the shape the stream job hands over (clean Arrow tables of pin, geo and
user with their arrival columns, rows drawn from the generated source tables, as in
``bench_writer.py``), written per batch by the PostgreSQL writer alone (the baseline, no Delta:
``speed.delta_output = false``) and by the PostgreSQL writer then the Delta writer, as the
handler does, in the same invocation. Prints one row per (output, records per table): median
and p95 seconds per batch, the Delta append's own median and p95, and the ratio against the
baseline. Each configuration writes into a fresh database and lake, after two batches not timed.

``--upkeep``: one table's life at one commit a batch, ``--batches`` micro-batches of
``--min``..``--max`` pin rows (uniform, seeded), with the upkeep the stream does every
``--every`` batches (compaction, then a checkpoint); prints every step's seconds as the table
grows, then, on the same number of batches left without upkeep: a reader's opening of the
table before and after a checkpoint, compaction, checkpoint and full vacuum (retention 0 and the
default 24 hours) of the whole table.

::

    .venv/bin/python bench/bench_delta.py --records 150 6000 --batches 30
    .venv/bin/python bench/bench_delta.py --upkeep --batches 600 --min 150 --max 6000 --every 100
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_writer import TOPICS, batch_tables  # noqa: E402

from pinpipe.config import Settings  # noqa: E402
from pinpipe.events import Table  # noqa: E402
from pinpipe.services.resolve import postgres_dsn  # noqa: E402
from pinpipe.source.generator import generate_tables  # noqa: E402
from pinpipe.speed.delta import DeltaWriter  # noqa: E402
from pinpipe.speed.writer import PostgresWriter  # noqa: E402
from pinpipe.store.schema import apply_migrations  # noqa: E402


def quantiles(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def per_batch(admin_dsn: str, tables, records: int, batches: int, delta: bool, work: Path) -> dict:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = make_conninfo(admin_dsn, dbname=name)
    lake = work / f"lake-{name}"
    try:
        apply_migrations(dsn)
        writer = PostgresWriter(dsn, lateness_s=600)
        settings = Settings(data_dir=work, lake={"root": str(lake)})
        deltas = DeltaWriter.from_settings(settings) if delta else None
        now = datetime.now(UTC)
        totals, appends = [], []
        for n in range(batches + 2):
            at = now + timedelta(seconds=n)
            batch = {t: batch_tables(tables, t, n * records, records, at) for t in Table}
            began = time.perf_counter()
            writer.write("bench", n, batch, None, TOPICS)
            if deltas is not None:
                appended = time.perf_counter()
                deltas.write("bench", n, batch)
                if n >= 2:
                    appends.append(time.perf_counter() - appended)
            if n >= 2:
                totals.append(time.perf_counter() - began)
        writer.close()
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(lake, ignore_errors=True)
    median, p95 = quantiles(totals)
    result = {"median": median, "p95": p95}
    if appends:
        result["append"] = quantiles(appends)
    return result


def bench_per_batch(args, work: Path) -> None:
    settings = Settings(data_dir=work)  # PINPIPE_* still apply (a configured DSN is used)
    tables = generate_tables(rows=11_154)
    results = []
    with postgres_dsn(settings) as dsn:
        for records in args.records:
            for label, delta in (("baseline (PostgreSQL only)", False), ("PostgreSQL + Delta", True)):
                print(f"[{label}] {records} records per table ...", file=sys.stderr)
                results.append((label, records, per_batch(dsn, tables, records, args.batches, delta, work)))
    print("| output | records/table | s per batch p50 | p95 | Delta append p50 | p95 | p50 ratio |")
    print("|---|---|---|---|---|---|---|")
    for label, records, result in results:
        base = next(r for lab, n, r in results if n == records and lab.startswith("baseline"))
        append = result.get("append")
        delta = f"{append[0]:.3f} | {append[1]:.3f}" if append else "- | -"
        print(f"| {label} | {records:,} | {result['median']:.3f} | {result['p95']:.3f} | {delta} |"
              f" {result['median'] / base['median']:.2f} |")


def bench_upkeep(args, work: Path) -> None:
    tables = generate_tables(rows=11_154)
    rng = random.Random(7)
    sizes = [rng.randint(args.min, args.max) for _ in range(args.batches)]
    now = datetime.now(UTC)
    batches = []
    first = 0
    for n, size in enumerate(sizes):
        batches.append(batch_tables(tables, Table.PIN, first, size, now + timedelta(seconds=n)))
        first += size
    print(f"{args.batches} batches of {args.min:,}-{args.max:,} pin rows, {first:,} rows in all",
          file=sys.stderr)
    print("| table after batch | step | seconds |")
    print("|---|---|---|")
    writer = DeltaWriter({Table.PIN: str(work / "scheduled")}, compact_every=args.every,
                         checkpoint_every=args.every)  # fmt: skip
    appends = []
    for n, batch in enumerate(batches):
        began = time.perf_counter()
        outcome = writer.write("bench", n, {Table.PIN: batch})
        appends.append(time.perf_counter() - began - sum(outcome.upkeep.values()))
        for step, seconds in outcome.upkeep.items():
            print(f"| {n:,} | {step} | {seconds:.3f} |")
    first_appends, last_appends = quantiles(appends[: args.every]), quantiles(appends[-args.every :])
    print(f"| first {args.every} | append p50 / p95 | {first_appends[0]:.3f} / {first_appends[1]:.3f} |")
    print(f"| last {args.every} | append p50 / p95 | {last_appends[0]:.3f} / {last_appends[1]:.3f} |")

    bare = DeltaWriter({Table.PIN: str(work / "bare")})
    for n, batch in enumerate(batches):
        bare.write("bench", n, {Table.PIN: batch})
    table = bare.table(Table.PIN)

    def compact() -> str:
        done = table.optimize.compact()
        return f"{done['numFilesRemoved']} files -> {done['numFilesAdded']}"

    def open_table() -> None:
        from deltalake import DeltaTable

        DeltaTable(str(work / "bare"))

    for step, action in (
        ("open the table (a reader's start), no checkpoint", open_table),
        ("compact (no upkeep before)", compact),
        ("compact again (the first pass's files)", compact),
        ("checkpoint + log clean-up", lambda: (table.create_checkpoint(), table.cleanup_metadata())),
        ("open the table after the checkpoint", open_table),
        ("vacuum, retention 24 h (deletes nothing)",
         lambda: table.vacuum(retention_hours=24, enforce_retention_duration=False, dry_run=False, full=True)),
        ("vacuum, retention 0 (deletes the compacted files)",
         lambda: table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False, full=True)),
    ):  # fmt: skip
        began = time.perf_counter()
        said = action()
        what = f"{step}: {said}" if isinstance(said, str) else step
        print(f"| {args.batches:,} (no upkeep) | {what} | {time.perf_counter() - began:.3f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, nargs="+", default=[150, 6000], help="records per table and batch")
    parser.add_argument("--batches", type=int, default=30, help="timed batches per configuration")
    parser.add_argument("--upkeep", action="store_true", help="time the upkeep of one growing table instead")
    parser.add_argument("--min", type=int, default=150, help="--upkeep: fewest rows in a batch")
    parser.add_argument("--max", type=int, default=6000, help="--upkeep: most rows in a batch")
    parser.add_argument("--every", type=int, default=100, help="--upkeep: batches between upkeep steps")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pinpipe-bench-delta-"))
    os.chmod(work, 0o755)  # the embedded server may run as another user
    try:
        (bench_upkeep if args.upkeep else bench_per_batch)(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
