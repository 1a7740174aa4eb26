"""Benchmark of the batch layer; prints a table (not a test).

1. ``run_batch(all_dates=True)`` (Spark start and the PostgreSQL publish included) in a child
   process over POSTS posts: random rows of the 11,154-row source, as the emulator posts them,
   three raw records each, written in the lake sink's layout (3 partitions, 100k-record files).
   Wall time and the peak memory of the whole process tree (Python + JVM + PostgreSQL).
2. The original projects' storage as the baseline: the first BASELINE posts stored one JSON file
   per event; Spark reads them (schema given) vs the same records from the raw Parquet.

3. With ``--spark-workers N``: the same run again on the embedded standalone cluster of N workers
   (started here, stopped at the end), beside the ``local[2]`` run of the same invocation, with
   the ratio of the walls; its peak memory adds the master's and workers' process trees
   (executor JVMs included).

Usage: python bench/bench_batch.py [--posts 1000000] [--baseline 100000] [--dir /tmp/pinpipe-bench]
       [--spark-workers 2]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pinpipe.events import Table, format_utc
from pinpipe.source.generator import generate_tables

FILE_RECORDS = 100_000
PARTITIONS = 3
START = datetime(2024, 3, 1, tzinfo=UTC)


def _value(record: dict) -> str:
    return orjson.dumps(
        {k: format_utc(v) if isinstance(v, datetime) else v for k, v in record.items()}
    ).decode()


def write_lake(lake: Path, posts: int, seed: int = 42) -> list[int]:
    """The emulator's draws written as raw files; returns the drawn row numbers."""
    tables = generate_tables(seed)
    rng = random.Random(seed)
    rows = [rng.randrange(len(tables)) for _ in range(posts)]
    values = {t: [_value(r) for r in tables.rows(t)] for t in Table}  # one encoding per row
    for table in Table:
        topic = f"bench.{table.value}"
        for partition in range(PARTITIONS):
            mine = rows[partition::PARTITIONS]
            for first in range(0, len(mine), FILE_RECORDS):
                chunk = mine[first : first + FILE_RECORDS]
                offsets = list(range(first, first + len(chunk)))
                stamps = [START + timedelta(milliseconds=o) for o in offsets]
                directory = lake / "raw" / table.value / f"dt={START.date().isoformat()}"
                directory.mkdir(parents=True, exist_ok=True)
                data = pa.table(
                    {
                        "value": [values[table][r] for r in chunk],
                        "key": [str(r) for r in chunk],
                        "topic": [topic] * len(chunk),
                        "partition": pa.array([partition] * len(chunk), pa.int32()),
                        "offset": pa.array(offsets, pa.int64()),
                        "timestamp": pa.array(stamps, pa.timestamp("ms", tz="UTC")),
                        "written_at": pa.array(
                            [datetime.now(UTC)] * len(chunk), pa.timestamp("us", tz="UTC")
                        ),
                    }
                )
                pq.write_table(
                    data,
                    directory / f"{topic}+{partition}+{first:020d}.parquet",
                    compression="zstd",
                )
    return rows


def _tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def run_measured(
    command: list[str], env: dict[str, str], also: tuple[int, ...] = ()
) -> tuple[float, int, str]:
    """Wall, peak memory of the process tree (and of the trees of the pids ``also``), output."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss(process.pid) + sum(_tree_rss(pid) for pid in also))
        time.sleep(0.2)
    output = process.stdout.read() if process.stdout else ""
    if process.returncode:
        raise SystemExit(f"benchmark run failed:\n{output[-4000:]}")
    return time.perf_counter() - start, peak, output


BATCH = """
import time
from pinpipe.config import load_settings
from pinpipe.batch import run_batch
result = run_batch(load_settings(), all_dates=True)
print(result.to_json())
"""

BASELINE = """
import sys, time
from pinpipe.config import load_settings
from pinpipe.spark.session import get_spark
from pinpipe.events import Table, spark_schema
spark = get_spark(load_settings())
json_dir, raw_dir = sys.argv[1], sys.argv[2]
for name, read in (
    ("json", lambda t: spark.read.schema(spark_schema(t)).json(f"{json_dir}/{t.value}")),
    ("parquet", lambda t: spark.read.parquet(f"{raw_dir}/{t.value}").limit(int(sys.argv[3]))),
):
    start = time.perf_counter()
    rows = sum(read(t).count() for t in Table)
    print(f"BASELINE {name} {rows} {time.perf_counter() - start:.2f}")
"""


def write_json_files(directory: Path, rows: list[int]) -> None:
    tables = generate_tables(42)
    for table in Table:
        target = directory / table.value
        target.mkdir(parents=True, exist_ok=True)
        for n, row in enumerate(rows):
            (target / f"{n:07d}.json").write_text(_value(tables.rows(table)[row]))


def _on_cluster(args: argparse.Namespace, env: dict[str, str], local_wall: float) -> tuple:
    """The same run on an embedded cluster of ``--spark-workers`` workers (started and stopped here)."""
    from pinpipe.config import Settings
    from pinpipe.services.spark_cluster import cluster_down, cluster_up, running_master
    from pinpipe.services.state import read_record, record_names

    settings = Settings(data_dir=args.dir, batch={"spark_workers": args.spark_workers})
    try:
        cluster_up(settings, [])
        daemons = tuple(
            read_record(settings.run_dir, name).pid
            for name in record_names(settings.run_dir, "spark-")
        )
        master = running_master(settings).address
        wall, peak, output = run_measured(
            [sys.executable, "-c", BATCH], {**env, "PINPIPE_BATCH__SPARK_MASTER": "embedded"}, daemons
        )
    finally:
        cluster_down(settings)
    print(output[output.find("{") :] if "{" in output else output[-2000:])
    return (
        f"run_batch --all, {master} ({args.spark_workers} workers)",
        f"{args.posts:,} posts / {3 * args.posts:,} records",
        f"{wall:.1f} s (x{wall / local_wall:.2f} of local[2])",
        f"{peak / 2**30:.2f} GiB (with the cluster)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/pinpipe-bench"))
    parser.add_argument("--spark-workers", type=int, default=0,
                        help="Also run on an embedded cluster of N workers (0: local[2] only).")
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    os.chmod(args.dir, 0o755)
    lake = args.dir / "lake"

    started = time.perf_counter()
    rows = write_lake(lake, args.posts)
    print(f"raw lake: {3 * args.posts:,} records written in {time.perf_counter() - started:.1f} s")
    env = {
        **os.environ,
        "PINPIPE_DATA_DIR": str(args.dir),
        "PINPIPE_LAKE__ROOT": str(lake),
        "PYSPARK_PYTHON": sys.executable,
    }
    wall, peak, output = run_measured(
        [sys.executable, "-c", BATCH], {**env, "PINPIPE_BATCH__SPARK_MASTER": "local[2]"}
    )
    print(output[output.find("{") :] if "{" in output else output[-2000:])

    results = [
        (
            "run_batch --all, local[2]",
            f"{args.posts:,} posts / {3 * args.posts:,} records",
            f"{wall:.1f} s",
            f"{peak / 2**30:.2f} GiB",
        )
    ]
    if args.spark_workers:
        results.append(_on_cluster(args, env, wall))
    if args.baseline:
        json_dir = args.dir / "json"
        started = time.perf_counter()
        write_json_files(json_dir, rows[: args.baseline])
        print(
            f"one JSON file per event: {3 * args.baseline:,} files in "
            f"{time.perf_counter() - started:.1f} s"
        )
        command = [
            sys.executable,
            "-c",
            BASELINE,
            str(json_dir),
            str(lake / "raw"),
            str(args.baseline),
        ]
        _, base_peak, output = run_measured(command, env)
        for line in output.splitlines():
            if line.startswith("BASELINE "):
                _, name, count, seconds = line.split()
                results.append(
                    (
                        f"Spark reads {name}",
                        f"{int(count):,} records",
                        f"{float(seconds):.1f} s",
                        f"{base_peak / 2**30:.2f} GiB (run)",
                    )
                )
    width = [max(len(r[i]) for r in results) for i in range(4)]
    for row in [("what", "input", "wall", "peak memory"), *results]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, width)))


if __name__ == "__main__":
    main()
