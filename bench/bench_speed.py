"""Speed-layer latency: acknowledgement -> row visible in PostgreSQL, at a steady rate.

Starts an embedded broker and PostgreSQL (or uses PINPIPE_* settings), runs the stream job as
its own process (``python -m pinpipe.speed``, as ``pinpipe up`` does), and sends ``--rate``
posts per second (three records each: pin, geo, user) for ``--duration`` seconds, in one of
two ways:

``--via kafka`` (default)
    a producer writes the records the way the ingest API stores them; a pin is acknowledged
    when the broker acknowledges its delivery;
``--via api``
    the emulator (:mod:`pinpipe.source.emulator`, native wire format, in this process) posts to
    the ingest API (``pinpipe api``, its own process); a pin is acknowledged when the API
    answers its request (the API answers after the broker acknowledged). The emulator draws
    random source rows, so a pin arrives many times: its latency is from its *last*
    acknowledgement.

The load runs ``--warmup`` seconds (default 20) before the measured window: the first
micro-batches of a new Spark query are slower (JIT, Python workers starting). Latency is
measured per pin acknowledged in the window, from its acknowledgement to the row's ``updated_at`` (the
upsert inside its micro-batch's transaction). Lag is records acknowledged minus records
committed by the stream job (``pinpipe.stream_batch.records``), sampled every second. Peak RSS
is the stream job's: its Python process, its JVM and the PySpark workers. Prints one table
with a row per configuration, and the lag per minute. The rate in the table is the one
achieved (posts sent over the time the load took, which is longer than planned when the load
generator fell behind), beside the one asked for, with a warning when they part; each run's
working directory (lake, checkpoint, PostgreSQL: 250-460 MB) is removed. ``--baseline`` adds, in the same
invocation, a run that differs in one setting, for the ratio:

``--baseline linger``
    the producers' ``linger.ms`` at ``--baseline-linger-ms`` (default 2, pinpipe's earlier
    default) instead of the ingest API's setting;
``--baseline tasks``
    one Spark task per Kafka partition (Spark's kafka source default) instead of
    ``speed.read_tasks``;
``--baseline storage``
    the embedded broker on the other storage than ``--broker-storage`` (memory <-> s3, see
    ``broker.storage``), for the cost of a durable log.

::

    .venv/bin/python bench/bench_speed.py --via api --rate 2000 --duration 300 --baseline linger
    .venv/bin/python bench/bench_speed.py --rate 2000 --duration 60 --baseline tasks
    .venv/bin/python bench/bench_speed.py --rate 2000 --duration 90 --broker-storage s3 --baseline storage
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import psutil
import psycopg


class PeakRss:
    """Samples the RSS of a process and all its children (JVM, PySpark workers); keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.peak = 0
        self._root = psutil.Process(pid)

    def sample(self) -> None:
        try:
            processes = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for process in processes:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        self.peak = max(self.peak, total)


def child_env(workdir: Path, bootstrap: str, dsn: str, read_tasks: int, linger_ms: float) -> dict[str, str]:
    """The environment of the stream job and the API: the broker and PostgreSQL started here."""
    return {
        **os.environ,
        "PINPIPE_DATA_DIR": str(workdir),
        "PINPIPE_BROKER__BOOTSTRAP_SERVERS": bootstrap,
        "PINPIPE_POSTGRES__DSN": dsn,
        "PINPIPE_SPEED__READ_TASKS": str(read_tasks),
        "PINPIPE_INGEST__LINGER_MS": str(linger_ms),
        "PYTHONUNBUFFERED": "1",
    }


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, *argv], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGTERM (the stream job finishes its batch), SIGKILL after ``timeout_s``."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def running_api(env: dict[str, str], workdir: Path, timeout_s: float = 60.0) -> Iterator[str]:
    """``pinpipe api`` on a free loopback port, ready; yields its base URL."""
    import httpx

    from pinpipe.services.broker import free_port

    port = free_port()
    process = start(["-m", "pinpipe.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
                    env, workdir / "api.log")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the ingest API did not get ready; see {workdir / 'api.log'}")
            time.sleep(0.2)
        yield url
    finally:
        stop(process)


def committed_records(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.execute("SELECT coalesce(sum(records), 0) FROM pinpipe.stream_batch").fetchone()[0])


def wait_for_pins(dsn: str, at_least: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(dsn) as conn:
                if conn.execute("SELECT count(*) FROM pinpipe.pin").fetchone()[0] >= at_least:
                    return True
        except psycopg.Error:
            pass
        time.sleep(0.5)
    return False


def post_records(index: int, uid: str) -> dict:
    from pinpipe.events import Table

    now = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {
        Table.PIN: {"index": index, "unique_id": uid, "title": "t", "description": "d",
                    "poster_name": "p", "follower_count": "26k", "tag_list": "a,b",
                    "is_image_or_video": "image", "image_src": "https://x/y.jpg",
                    "downloaded": 1, "save_location": "Local save in /data/art", "category": "art"},
        Table.GEO: {"ind": index, "timestamp": now, "latitude": -5.0, "longitude": 10.0, "country": "Chad"},
        Table.USER: {"ind": index, "first_name": "A", "last_name": "B", "age": 30, "date_joined": now},
    }


def load_via_kafka(settings, bootstrap: str, args, linger_ms: float, acked: dict[str, float], tick) -> tuple[int, int, float]:
    """Produce ``rate`` posts/s straight to the topics, batched as the API's producer batches;
    returns records acknowledged, posts sent and how long the load took (with the last flush)."""
    from confluent_kafka import Producer

    from pinpipe.events import Table, topic_name

    prefix = settings.broker.topic_prefix
    producer = Producer({**settings.broker.client_config(bootstrap), "linger.ms": linger_ms, "acks": "all"})
    delivered_records = [0]

    def delivered(error, message) -> None:
        if error is None:
            delivered_records[0] += 1
            if message.topic().endswith(".pin"):
                acked[message.key().decode()] = time.time()

    began, sent = time.monotonic(), 0
    planned_s = args.warmup + args.duration
    while time.monotonic() - began < planned_s:
        due = int((time.monotonic() - began) * args.rate)
        while sent < due:
            uid = str(uuid.uuid4())
            for table, record in post_records(sent, uid).items():
                key = uid if table is Table.PIN else str(sent)
                while True:
                    try:
                        producer.produce(topic_name(prefix, table), key=key.encode(),
                                         value=json.dumps(record, separators=(",", ":")).encode(),
                                         on_delivery=delivered)
                        break
                    except BufferError:  # a broker slower than the load: it falls behind, said below
                        producer.poll(0.05)
                        tick(delivered_records[0])
            sent += 1
        producer.poll(0)
        tick(delivered_records[0])
        time.sleep(0.002)
    producer.flush(60)
    return delivered_records[0], sent, time.monotonic() - began


def load_via_api(url: str, args, acked: dict[str, float], tick) -> tuple[int, int, float]:
    """Run the emulator against the ingest API at ``rate`` posts/s; returns records accepted,
    posts sent and how long the load took (longer than planned when it fell behind)."""
    from pinpipe.source.emulator import Emulator, EmulatorPlan
    from pinpipe.source.generator import generate_tables
    from pinpipe.source.wire import WireFormat

    class AckClockEmulator(Emulator):
        """Notes when the API acknowledged each pin of a successful request."""

        async def _send(self, client, request) -> None:
            before = self.stats.accepted
            await super()._send(client, request)
            if self.stats.accepted > before:
                now = time.time()
                for record in json.loads(request.body):
                    if record["table"] == "pin":
                        acked[str(record["value"]["unique_id"])] = now
            tick(self.stats.accepted)

    tables = generate_tables(seed=7)
    plan = EmulatorPlan(base_url=url, wire_format=WireFormat.NATIVE, rate=args.rate,
                        duration_s=args.warmup + args.duration, batch_size=args.api_batch, concurrency=8)
    emulator = AckClockEmulator(tables, plan)
    began = time.monotonic()
    stats = asyncio.run(emulator.run_async())
    print(f"emulator: {stats.as_dict()}", flush=True)
    return stats.accepted, stats.posts, time.monotonic() - began


def latency_split(conn, checkpoint: Path, pin_topic: str, since: float) -> str:
    """Where a pin's time goes, from the stream's checkpoint: the median seconds from the record's
    broker timestamp (the API's produce) to the offset probe of the micro-batch that read it (the
    offset log's write), and from there to the upsert. Spark keeps the last 100 offset logs, so
    this covers the last 100 micro-batches."""
    probes = {}
    for path in (checkpoint / "offsets").iterdir():
        if path.name.isdigit():
            ends: dict = {}
            for line in path.read_text().splitlines()[2:]:  # a version, the batch's metadata, sources
                ends.update(json.loads(line))
            probes[int(path.name)] = (path.stat().st_mtime, ends.get(pin_topic, {}))
    ids = sorted(probes)
    if len(ids) < 2:
        return "no offset logs to split the latency by"
    rows = conn.execute(
        "SELECT kafka_partition, kafka_offset, extract(epoch FROM broker_timestamp), "
        "extract(epoch FROM updated_at) FROM pinpipe.pin WHERE broker_timestamp >= to_timestamp(%s)",
        (since,),
    ).fetchall()
    to_probe, to_upsert = [], []
    for partition, offset, created, upserted in rows:
        for batch in ids[1:]:
            start, end = probes[batch - 1][1].get(str(partition)), probes[batch][1].get(str(partition))
            if start is not None and end is not None and start <= offset < end:
                to_probe.append(probes[batch][0] - float(created))
                to_upsert.append(float(upserted) - probes[batch][0])
                break
    if not to_probe:
        return "no pin of the last 100 micro-batches to split the latency by"
    return (f"{len(to_probe)} pins of the last {len(ids) - 1} micro-batches, median: produced -> read "
            f"by an offset probe {statistics.median(to_probe):.2f} s, probe -> upserted "
            f"{statistics.median(to_upsert):.2f} s")


def run_once(args, label: str, read_tasks: int, linger_ms: float,
             storage: str = "memory") -> tuple[tuple[str, ...], list[int], str]:
    """One configuration on a fresh broker, PostgreSQL and stream job; returns its table row, its
    lag samples (one a second) and its latency split (:func:`latency_split`)."""
    from confluent_kafka import Producer

    from pinpipe.config import load_settings
    from pinpipe.events import Table, topic_name
    from pinpipe.services.resolve import kafka_bootstrap, postgres_dsn
    from pinpipe.speed.job import checkpoint_location

    workdir = Path(tempfile.mkdtemp(prefix="pinpipe-bench-speed-", dir="/tmp"))
    workdir.chmod(0o755)
    settings = load_settings(data_dir=workdir, broker={"storage": storage})
    with kafka_bootstrap(settings) as bootstrap, postgres_dsn(settings) as dsn:
        env = child_env(workdir, bootstrap, dsn, read_tasks, linger_ms)
        job = start(["-m", "pinpipe.speed", "--trigger-s", str(args.trigger_s)], env, workdir / "stream.log")
        rss = PeakRss(job.pid)
        try:
            # warm up: one post through the whole path before the clock starts
            producer = Producer(settings.broker.client_config(bootstrap))
            warm = json.dumps({"index": 0, "unique_id": "warm-up", "category": "art"}).encode()
            producer.produce(topic_name(settings.broker.topic_prefix, Table.PIN), key=b"warm-up", value=warm)
            producer.flush(30)
            if not wait_for_pins(dsn, 1, 300):
                raise SystemExit(f"the stream job did not write the warm-up record in 300 s; see {workdir}")
            warm_records = committed_records(dsn)

            acked: dict[str, float] = {}
            lag_samples: list[int] = []
            next_sample = [time.monotonic() + 1]

            measure_from = time.time() + args.warmup

            def tick(records_acked: int) -> None:
                if time.monotonic() >= next_sample[0] and time.time() >= measure_from:
                    next_sample[0] += 1
                    lag_samples.append(records_acked - (committed_records(dsn) - warm_records))
                    rss.sample()

            print(f"[{label}] sending {args.rate:.0f} posts/s for {args.warmup:.0f} s (warm-up) + "
                  f"{args.duration:.0f} s via {args.via} ...",
                  flush=True)
            if args.via == "kafka":
                total, posts, load_s = load_via_kafka(settings, bootstrap, args, linger_ms, acked, tick)
            else:
                with running_api(env, workdir) as url:
                    total, posts, load_s = load_via_api(url, args, acked, tick)
            # The rate achieved, not the one asked for: a load that fell behind takes longer.
            achieved = posts / load_s
            planned_s = args.warmup + args.duration
            if achieved < 0.97 * args.rate or load_s > 1.03 * planned_s:
                print(f"[{label}] the load fell behind schedule: {achieved:,.0f} posts/s achieved of "
                      f"{args.rate:,.0f} asked ({posts:,} posts in {load_s:.0f} s, planned {planned_s:.0f} s)",
                      flush=True)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and committed_records(dsn) - warm_records < total:
                rss.sample()
                time.sleep(0.5)
            drained = committed_records(dsn) - warm_records >= total
        finally:
            stop(job)
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT unique_id, extract(epoch FROM updated_at) FROM pinpipe.pin").fetchall()
            batches, mean_records = conn.execute(
                "SELECT count(*), avg(records) FROM pinpipe.stream_batch"
            ).fetchone()
            split = latency_split(conn, Path(checkpoint_location(settings)),
                                  topic_name(settings.broker.topic_prefix, Table.PIN), measure_from)
    latencies = sorted(
        float(seen) - acked[uid]
        for uid, seen in rows
        if uid in acked and acked[uid] >= measure_from and float(seen) >= acked[uid]
    )
    if not latencies:
        shutil.rmtree(workdir, ignore_errors=True)
        raise SystemExit("no acknowledged pin of the measured window reached PostgreSQL")
    q = statistics.quantiles(latencies, n=100)
    third = max(1, len(lag_samples) // 3)
    lag_start = statistics.mean(lag_samples[:third]) if lag_samples else float("nan")
    lag_end = statistics.mean(lag_samples[-third:]) if lag_samples else float("nan")
    shutil.rmtree(workdir, ignore_errors=True)  # its lake, checkpoint and PostgreSQL: 250-460 MB
    return (label, args.via, f"{args.rate:.0f}", f"{achieved:.0f}", f"{load_s:.0f}", str(len(latencies)),
            f"{q[49]:.2f}", f"{q[94]:.2f}", f"{q[98]:.2f}", f"{latencies[-1]:.2f}",
            f"{lag_start:.0f}", f"{lag_end:.0f}", str(max(lag_samples, default=0)), str(batches),
            f"{float(mean_records or 0):.0f}", f"{rss.peak / 2**20:.0f}", "yes" if drained else "NO"), lag_samples, split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2000.0, help="posts per second (x3 records)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of steady load")
    parser.add_argument("--warmup", type=float, default=20.0,
                        help="seconds of the same load before the measured window (Spark warms up)")
    parser.add_argument("--trigger-s", type=float, default=1.0)
    parser.add_argument("--via", choices=("kafka", "api"), default="kafka")
    parser.add_argument("--api-batch", type=int, default=20, help="posts per API request (--via api)")
    parser.add_argument("--broker-storage", choices=("memory", "s3"), default="memory",
                        help="the embedded broker's log (broker.storage)")
    parser.add_argument("--baseline", choices=("linger", "tasks", "storage"),
                        help="also run a baseline that differs in one setting, for the ratio")
    parser.add_argument("--baseline-linger-ms", type=float, default=2.0,
                        help="the producers' linger.ms in the linger baseline")
    args = parser.parse_args()

    from pinpipe.config import load_settings

    settings = load_settings()
    linger_ms, tasks = settings.ingest.linger_ms, settings.speed.read_tasks
    storage = args.broker_storage
    runs = [run_once(args, f"pinpipe ({tasks} read tasks, linger {linger_ms:g} ms, {storage} log)",
                     tasks, linger_ms, storage)]
    if args.baseline == "linger":
        runs.append(run_once(args, f"baseline (linger {args.baseline_linger_ms:g} ms)", tasks,
                             args.baseline_linger_ms, storage))
    elif args.baseline == "tasks":
        runs.append(run_once(args, "baseline (1 task per partition)", 0, linger_ms, storage))
    elif args.baseline == "storage":
        other = "memory" if storage == "s3" else "s3"
        runs.append(run_once(args, f"baseline ({other} log)", tasks, linger_ms, other))
    results = [row for row, _, _ in runs]
    header = ("run", "via", "posts/s asked", "achieved", "load s", "pins", "p50 s", "p95 s", "p99 s", "max s",
              "lag start", "lag end", "lag max", "batches", "rec/batch", "peak RSS MiB", "drained")
    widths = [max(len(h), *(len(row[i]) for row in results)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in results:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |")
    if len(results) == 2:
        p50, p99 = (float(results[0][6]), float(results[1][6])), (float(results[0][8]), float(results[1][8]))
        print(f"ratio pinpipe / baseline: p50 {p50[0] / p50[1]:.2f}, p99 {p99[0] / p99[1]:.2f}")
    for row, lag_samples, split in runs:
        minutes = [lag_samples[i:i + 60] for i in range(0, len(lag_samples), 60)]
        print(f"lag per minute, {row[0]}: " + ", ".join(f"{statistics.mean(m):,.0f}" for m in minutes))
        print(f"latency split, {row[0]}: {split}")
    print("lag = records acknowledged but not yet committed by the stream job (first / last third "
          "of the run, averaged); latency = ack -> row upserted in PostgreSQL, per pin")


if __name__ == "__main__":
    main()
