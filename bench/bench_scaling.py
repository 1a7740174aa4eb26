"""Scale-out on one machine: the stream job with 1 and 2 executors, the lake sink with 1 and 2
instances in one consumer group, the ingest API with 1 and 2 worker processes; prints a table
per stage.

    PYTHONPATH=src .venv/bin/python bench/bench_scaling.py [--stage stream|sink|api] [--posts 100000]
        [--partitions 4] [--repeat 3] [--seconds 10]

``--stage api``: ``pinpipe api --workers N`` (uvicorn worker processes sharing one socket)
against an embedded broker, driven by ``bench_ingest.py``'s load generator (raw keep-alive
HTTP/1.1 on asyncio, in this process) with single-record REST-proxy requests, each answered
only after the broker's acknowledgement, over ``--connections`` connections for ``--seconds``;
then 500-record batches. The ratio is against one worker of the same round. The load
generator runs on the same two cores as the workers and the broker.

``--stage sink`` (the lake sink, ``python -m pinpipe.lake``): the same kind of backlog drained by
one sink and by two sinks in one consumer group (each its own process; the partitions split
between them by the group's rebalance). Time runs from the first instance's partition
assignment (the group's join and rebalance when the second arrives included: a real cost of
scaling out) until every record is consumed (the instances' ``/metrics`` summed) and every
instance, stopped by SIGTERM, has written its last files and exited. The ratio is against one
instance of the same round.

``--stage stream`` (default):

Starts an embedded broker, PostgreSQL and a 2-worker embedded Spark cluster, fills the three
topics (``--partitions`` each) with ``--posts`` posts (three records each, the emulator's rows
as the ingest API stores them), then drains that backlog with the stream job
(``python -m pinpipe.speed``, a process of its own, a fresh checkpoint and database each time),
in three configurations of one invocation:

1. ``local[2]``: the baseline (the driver's JVM runs the tasks);
2. the cluster with one executor (``spark.cores.max = 1``);
3. the cluster with two executors (one per worker, the default there).

One read task per Kafka partition (``speed.read_tasks = 0``), ``--per-trigger`` records a
micro-batch. Throughput is the steady drain: the records of every micro-batch after the first,
over the time between the first's and the last's commit (``pinpipe.stream_batch``). The split
of a micro-batch (medians from the job's log): ``spark`` is the job on the executors including
the collect of its rows to the driver as Arrow, ``postgres`` the driver's upsert transaction;
their share says whether the driver (which writes every row) is the bottleneck.

On this machine (2 cores, shared with other developers' test runs) two executors cannot be
twice as fast as one: the driver, the broker, PostgreSQL and both executors share the two
cores. The ratio column is against configuration 2 (one executor) of the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from pinpipe.config import Settings
from pinpipe.events import DatetimeStyle, Table, record_key, topic_name
from pinpipe.services.broker import EmbeddedBroker
from pinpipe.services.postgres import EmbeddedPostgres
from pinpipe.services.spark_cluster import cluster_down, cluster_up, running_master
from pinpipe.services.topics import ensure_topics

PREFIX = "scale"
SPLIT = re.compile(r"batch (\d+) \(spark ([\d.]+) s, postgres ([\d.]+) s")


def fill(bootstrap: str, posts: int, partitions: int) -> int:
    """``posts`` posts (pin, geo, user each) in the topics; returns the records written."""
    from confluent_kafka import Producer

    from pinpipe.source.generator import generate_tables
    from pinpipe.source.wire import encode_row

    ensure_topics({"bootstrap.servers": bootstrap}, [topic_name(PREFIX, t) for t in Table], partitions)
    tables = generate_tables(42)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all",
                         "queue.buffering.max.messages": 500_000})  # fmt: skip
    encoded = {t: [(record_key(t, r), json.dumps(encode_row(r, DatetimeStyle.ISO), separators=(",", ":")))
                   for r in tables.rows(t)] for t in Table}  # fmt: skip
    written = 0
    for post in range(posts):
        row = post % len(tables)
        for table in Table:
            key, value = encoded[table][row]
            while True:
                try:
                    producer.produce(topic_name(PREFIX, table), value=value, key=key)
                    break
                except BufferError:
                    producer.poll(0.1)
            written += 1
        if post % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0
    return written


def sink_drain(bootstrap: str, workdir: Path, instances: int, records: int, name: str,
               timeout_s: float) -> float:
    """Records/s of ``instances`` lake sinks in one new group draining the topics (see the docstring)."""
    import signal

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_lake_sink import consumed

    from pinpipe.services.broker import free_port

    group, lake_dir = f"scaling-sink-{name}", workdir / f"sink-{name}"
    lake_dir.mkdir()
    ports = [free_port() for _ in range(instances)]
    logs = [lake_dir / f"sink-{i}.log" for i in range(instances)]
    processes = []
    for port, log in zip(ports, logs):
        with open(log, "wb") as out:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "pinpipe.lake", "--bootstrap", bootstrap, "--data-dir", str(lake_dir),
                 "--topic-prefix", PREFIX, "--group", group, "--metrics-port", str(port)],
                stdout=out, stderr=subprocess.STDOUT))  # fmt: skip
    deadline = time.monotonic() + timeout_s
    try:
        while not any("assigned [(" in log.read_text(errors="replace") for log in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise SystemExit("a sink did not start:\n" + logs[0].read_text(errors="replace")[-2000:])
            time.sleep(0.05)
        began = time.perf_counter()
        while sum(consumed(f"http://127.0.0.1:{port}/metrics") for port in ports) < records:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise SystemExit("a sink stopped:\n" + "\n".join(log.read_text(errors="replace")[-2000:]
                                                                for log in logs))
            time.sleep(0.05)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            assert process.wait(timeout=120) == 0
        seconds = time.perf_counter() - began
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    written = sum(json.loads(log.read_text().strip().splitlines()[-1])["records"] for log in logs)
    assert written == records, (written, records)  # every record once, across the instances
    shutil.rmtree(lake_dir, ignore_errors=True)
    return records / seconds


def sink_stage(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="pinpipe-scaling-", dir="/tmp"))
    rates: dict[int, list[float]] = {1: [], 2: []}
    try:
        with EmbeddedBroker(workdir / "broker") as broker:
            records = fill(broker.bootstrap_servers, args.posts, args.partitions)
            print(f"backlog: {records:,} records in {args.partitions} partitions a topic")
            for round_ in range(args.repeat):
                for instances in (1, 2):
                    rate = sink_drain(broker.bootstrap_servers, workdir, instances, records,
                                      f"{round_}-{instances}", args.timeout)
                    rates[instances].append(rate)
                    print(f"{instances} sink(s) (round {round_ + 1}): {rate:,.0f} records/s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    one = statistics.median(rates[1])
    print(f"\nlake sink draining {records:,} records ({args.partitions} partitions a topic, one group)")
    for instances, measured in rates.items():
        print(f"{instances} instance(s): median {statistics.median(measured):,.0f} records/s "
              f"(rounds: {' '.join(f'{r:,.0f}' for r in measured)}), x{statistics.median(measured) / one:.2f}")


def api_stage(args: argparse.Namespace) -> None:
    import asyncio

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_ingest import build_bodies, http_request, load, wait_ready

    from pinpipe.services.broker import free_port

    workdir = Path(tempfile.mkdtemp(prefix="pinpipe-scaling-", dir="/tmp"))
    single = [http_request("/topics/scaling.pin", body, "application/vnd.kafka.json.v2+json")
              for body in build_bodies(2000, 1)]  # fmt: skip
    batches = [http_request("/topics/scaling.pin", body, "application/vnd.kafka.json.v2+json")
               for body in build_bodies(20, 500)]  # fmt: skip
    runs: dict[int, list[tuple[float, float, float]]] = {1: [], 2: []}
    try:
        with EmbeddedBroker(workdir / "broker") as broker:
            ensure_topics({"bootstrap.servers": broker.bootstrap_servers}, ["scaling.pin"], args.partitions)
            for round_ in range(args.repeat):
                for workers in (1, 2):
                    port = free_port()
                    env = {**os.environ, "PINPIPE_DATA_DIR": str(workdir / f"api-{round_}-{workers}"),
                           "PINPIPE_BROKER__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                           "PINPIPE_BROKER__TOPIC_PREFIX": "scaling",
                           "PINPIPE_INGEST__PORT": str(port), "PINPIPE_INGEST__WORKERS": str(workers)}
                    api = subprocess.Popen([sys.executable, "-m", "pinpipe.cli", "api"], env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                           start_new_session=True)  # fmt: skip
                    try:
                        wait_ready(f"http://127.0.0.1:{port}")
                        one = asyncio.run(load(port, single, args.connections, args.seconds))
                        big = asyncio.run(load(port, batches, 8, args.seconds))
                    finally:
                        os.killpg(api.pid, 15)
                        api.wait(timeout=60)
                    ok = one.statuses.get(200, 0)
                    latencies = sorted(one.latencies)
                    p99 = latencies[int(len(latencies) * 0.99)] if latencies else float("nan")
                    runs[workers].append((ok / args.seconds, big.statuses.get(200, 0) * 500 / args.seconds, p99))
                    print(f"{workers} worker(s) (round {round_ + 1}): {ok / args.seconds:,.0f} requests/s,"
                          f" {runs[workers][-1][1]:,.0f} records/s in 500-record batches")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    base = [statistics.median(r[i] for r in runs[1]) for i in range(3)]
    print(f"\ningest API, {args.connections} connections, {args.seconds:g} s a step, median of {args.repeat} round(s)")
    header = ("workers", "single-record req/s", "x 1 worker", "p99 ms (closed loop)", "records/s (500 a request)", "x 1 worker")
    rows = [header]
    for workers, measured in runs.items():
        med = [statistics.median(r[i] for r in measured) for i in range(3)]
        rows.append((str(workers), f"{med[0]:,.0f}", f"{med[0] / base[0]:.2f}", f"{med[2] * 1000:.1f}",
                     f"{med[1]:,.0f}", f"{med[1] / base[1]:.2f}"))
    width = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, width)))


def drain(label: str, env: dict[str, str], workdir: Path, dsn: str, records: int, timeout_s: float) -> dict:
    """Run the stream job until it committed ``records``; its steady drain rate and split."""
    checkpoint = workdir / f"checkpoint-{label}"
    log = workdir / f"stream-{label}.log"
    with open(log, "ab") as out:
        job = subprocess.Popen([sys.executable, "-m", "pinpipe.speed", "--trigger-s", "0.2",
                                "--checkpoint-dir", str(checkpoint)], env=env, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            rows = _batches(dsn)
            if sum(r[1] for r in rows) >= records:
                break
            if job.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{label}: the stream job did not drain the backlog; log tail:\n"
                                 + log.read_text(errors="replace")[-3000:])
            time.sleep(0.5)
    finally:
        os.killpg(job.pid, 15)
        job.wait(timeout=60)
    with_records = [r for r in rows if r[1] > 0]
    first, last = with_records[0], with_records[-1]
    steady = sum(r[1] for r in with_records[1:])
    seconds = (last[2] - first[2]).total_seconds()
    splits = [(float(m[2]), float(m[3])) for m in SPLIT.finditer(log.read_text(errors="replace"))
              if int(m[1]) > with_records[0][0]]  # fmt: skip
    return {
        "label": label,
        "batches": len(with_records),
        "rate": steady / seconds if seconds > 0 else float("nan"),
        "spark": statistics.median(s for s, _ in splits) if splits else float("nan"),
        "postgres": statistics.median(p for _, p in splits) if splits else float("nan"),
    }


def _batches(dsn: str) -> list[tuple[int, int, object]]:
    try:
        with psycopg.connect(dsn) as conn:
            return conn.execute("SELECT batch_id, records, committed_at FROM pinpipe.stream_batch"
                                " ORDER BY batch_id").fetchall()  # fmt: skip
    except psycopg.errors.UndefinedTable:
        return []


def fresh_database(dsn: str, name: str) -> str:
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_conninfo(dsn, dbname=name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("stream", "sink", "api"), default="stream")
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--per-trigger", type=int, default=20_000, help="speed.max_offsets_per_trigger")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per drain")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, interleaved; the median is shown")
    parser.add_argument("--seconds", type=float, default=10.0, help="--stage api: seconds a step")
    parser.add_argument("--connections", type=int, default=32, help="--stage api: connections, single records")
    args = parser.parse_args()
    if args.stage == "api":
        api_stage(args)
        return
    if args.stage == "sink":
        sink_stage(args)
        return
    workdir = Path(tempfile.mkdtemp(prefix="pinpipe-scaling-", dir="/tmp"))
    os.chmod(workdir, 0o755)
    settings = Settings(data_dir=workdir, batch={"spark_workers": 2})
    results = []
    try:
        with EmbeddedBroker(workdir / "broker") as broker, EmbeddedPostgres(workdir / "postgres") as pg:
            began = time.perf_counter()
            records = fill(broker.bootstrap_servers, args.posts, args.partitions)
            print(f"backlog: {records:,} records in {args.partitions} partitions a topic,"
                  f" written in {time.perf_counter() - began:.1f} s")  # fmt: skip
            cluster_up(settings, [])
            master = running_master(settings).address
            base = {
                **os.environ,
                "PINPIPE_DATA_DIR": str(workdir),
                "PINPIPE_BROKER__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "PINPIPE_BROKER__TOPIC_PREFIX": PREFIX,
                "PINPIPE_SPEED__READ_TASKS": "0",
                "PINPIPE_SPEED__MAX_OFFSETS_PER_TRIGGER": str(args.per_trigger),
                "PINPIPE_SPEED__WARMUP_ROWS": "500",
                "PINPIPE_SPEED__DELTA_OUTPUT": "false",
                "PINPIPE_BATCH__DRIVER_MEMORY": "1g",
                "PYTHONUNBUFFERED": "1",
            }
            configurations = [
                ("local[2]", {"PINPIPE_BATCH__SPARK_MASTER": "local[2]"}),
                ("cluster, 1 executor", {"PINPIPE_BATCH__SPARK_MASTER": "embedded",
                                         "PINPIPE_BATCH__SPARK_CONF": '{"spark.cores.max": "1"}'}),
                ("cluster, 2 executors", {"PINPIPE_BATCH__SPARK_MASTER": "embedded"}),
            ]  # fmt: skip
            runs: dict[str, list[dict]] = {label: [] for label, _ in configurations}
            for round_ in range(args.repeat):  # interleaved: a busy spell hits every configuration
                for n, (label, extra) in enumerate(configurations):
                    name = f"{round_}-{n}"
                    dsn = fresh_database(pg.dsn, f"scaling_{round_}_{n}")
                    env = {**base, **extra, "PINPIPE_POSTGRES__DSN": dsn}
                    runs[label].append(drain(name, env, workdir, dsn, records, args.timeout))
                    print(f"{label} (round {round_ + 1}): {runs[label][-1]['rate']:,.0f} records/s")
            for label, measured in runs.items():
                middle = sorted(measured, key=lambda r: r["rate"])[len(measured) // 2]
                results.append(middle | {"label": label, "all": [r["rate"] for r in measured]})
    finally:
        cluster_down(settings)
        shutil.rmtree(workdir, ignore_errors=True)
    one = results[1]["rate"]
    print(f"\nstream job draining {records:,} records; cluster master {master} (2 workers)")
    header = ("configuration", "records/s (median)", "every round", "x 1 executor", "batches",
              "spark s (p50)", "postgres s (p50)")
    rows = [header] + [(r["label"], f"{r['rate']:,.0f}", " ".join(f"{x:,.0f}" for x in r["all"]),
                        f"{r['rate'] / one:.2f}", str(r["batches"]), f"{r['spark']:.2f}",
                        f"{r['postgres']:.2f}") for r in results]  # fmt: skip
    width = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, width)))


if __name__ == "__main__":
    main()
