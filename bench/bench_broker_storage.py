"""The embedded broker's two storages side by side: memory (the baseline) and s3 (durable).

For each storage (``broker.storage``), on a fresh broker in a fresh data dir:

produce rate
    ``--records`` records of ~290 B (a pin's JSON) to a 3-partition topic with the ingest API's
    producer settings (acks=all, idempotent, ``ingest.linger_ms``), as fast as the broker acks;
fetch CPU as the log grows
    the log is filled to each of ``--log-sizes`` records in batches of ``--batch-records``
    (small batches, as a steady API load writes them: the broker keeps one object per batch
    and a fetch lists them), then ``--fetch-records`` more are produced and fetched again
    by an assigned consumer; the CPU seconds of the broker (and, for s3, of its S3 server),
    read from ``/proc/<pid>/stat``, during that fetch, per 100k records fetched;
peak RSS
    ``VmHWM`` of the broker (and of the S3 server) in ``/proc/<pid>/status`` at the end;
speed-layer latency
    with ``--speed-seconds`` > 0, ``bench_speed.run_once`` at ``--speed-rate`` posts/s for that
    long on each storage (Spark stream job -> PostgreSQL; p50 / p99 from ack to upsert).

Prints one table (a row per storage) and the ratios s3 / memory; removes its data dirs::

    .venv/bin/python bench/bench_broker_storage.py --speed-seconds 90
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

TOPIC = "bench.storage"  # the log that grows and is fetched
RATE_TOPIC = "bench.rate"  # the produce-rate run's: Tansu lists objects per partition
PARTITIONS = 3
VALUE = (
    b'{"index":1,"unique_id":"' + b"x" * 36 + b'","title":"' + b"t" * 120 + b'",'
    b'"description":"' + b"d" * 60 + b'","category":"art","follower_count":"26k"}'
)  # ~290 B, a pin's size on the wire


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """The kernel's high-water mark of the resident set (``VmHWM``) of ``pid``, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def produce(bootstrap: str, count: int, batch_records: int | None, linger_ms: float,
            topic: str = TOPIC) -> tuple[float, dict[int, int]]:
    """Produce ``count`` records round-robin over the partitions; returns (seconds, the first
    offset acknowledged per partition)."""
    from confluent_kafka import Producer

    config = {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
              "linger.ms": linger_ms, "queue.buffering.max.messages": 1_000_000}
    if batch_records:
        config["batch.num.messages"] = batch_records
    producer = Producer(config)
    first: dict[int, int] = {}
    failed = []

    def delivered(error, message) -> None:
        if error is not None:
            failed.append(error)
        elif message.partition() not in first or message.offset() < first[message.partition()]:
            first[message.partition()] = message.offset()

    began = time.monotonic()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, value=VALUE, partition=i % PARTITIONS, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(300) or failed:
        raise SystemExit(f"produce failed: {failed[:3]}")
    return time.monotonic() - began, first


def fetch(bootstrap: str, start: dict[int, int], count: int, timeout_s: float) -> int:
    """Fetch ``count`` records from the ``start`` offsets with one assigned consumer; returns how
    many arrived (fewer when ``timeout_s`` passed first: a broker whose fetches stall)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "log_level": 3})
    consumer.assign([TopicPartition(TOPIC, p, offset) for p, offset in start.items()])
    got, deadline = 0, time.monotonic() + timeout_s
    while got < count and time.monotonic() < deadline:
        got += sum(1 for m in consumer.consume(10_000, 0.5) if m.error() is None)
    consumer.close()
    return got


def measure(storage: str, args) -> dict[str, object]:
    """One storage on a fresh broker: produce rate, fetch CPU at each log size, peak RSS."""
    from pinpipe.config import load_settings
    from pinpipe.services.resolve import kafka_bootstrap
    from pinpipe.services.topics import ensure_topics

    workdir = Path(tempfile.mkdtemp(prefix=f"pinpipe-bench-storage-{storage}-", dir="/tmp"))
    settings = load_settings(data_dir=workdir, broker={"storage": storage})
    result: dict[str, object] = {"storage": storage}
    try:
        with kafka_bootstrap(settings) as bootstrap:
            broker_pid, s3_pid = _pids(bootstrap, workdir)
            ensure_topics({"bootstrap.servers": bootstrap}, [TOPIC, RATE_TOPIC], PARTITIONS)
            seconds, _ = produce(bootstrap, args.records, None, settings.ingest.linger_ms, RATE_TOPIC)
            result["produce/s"] = args.records / seconds
            in_log, fetch_cpu = 0, {}
            for size in args.log_sizes:
                if size > in_log:
                    produce(bootstrap, size - in_log, args.batch_records, 5.0)
                    in_log = size
                _, start = produce(bootstrap, args.fetch_records, args.batch_records, 5.0)
                in_log += args.fetch_records
                before = [cpu_seconds(pid) for pid in (broker_pid, s3_pid) if pid]
                got = fetch(bootstrap, start, args.fetch_records, args.fetch_timeout)
                after = [cpu_seconds(pid) for pid in (broker_pid, s3_pid) if pid]
                if got < args.fetch_records:  # CPU per record means nothing then
                    fetch_cpu[size] = f"stalled: {got:,} of {args.fetch_records:,} in {args.fetch_timeout:.0f} s"
                else:
                    per_100k = 100_000 / args.fetch_records
                    fetch_cpu[size] = [(a - b) * per_100k for a, b in zip(after, before)]
                cell = fetch_cpu[size]
                shown = cell if isinstance(cell, str) else " + ".join(f"{c:.2f} s" for c in cell)
                print(f"[{storage}] {in_log:,} records in the log: fetch CPU/100k {shown}", flush=True)
            result["fetch"] = fetch_cpu
            result["rss"] = [peak_rss_mib(pid) for pid in (broker_pid, s3_pid) if pid]
            result["disk MiB"] = _disk_mib(workdir / "broker-s3")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _pids(bootstrap: str, workdir: Path) -> tuple[int, int | None]:
    """The broker's pid (by its listener) and the S3 server's (by its objects folder), if any."""
    from pinpipe.processes import process_cmdline, process_table

    broker = s3 = None
    for entry in process_table():
        command = process_cmdline(entry.pid)
        if f"tcp://{bootstrap}" in command and "tansu" in command:
            broker = entry.pid
        elif str(workdir) in command and "broker_s3" in command:
            s3 = entry.pid
    if broker is None:
        raise SystemExit("the broker's process was not found")
    return broker, s3


def _disk_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0


def speed_latency(storage: str, args) -> tuple[str, str]:
    """p50 and p99 (s) of bench_speed's stream job against a broker on ``storage``."""
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_speed

    from pinpipe.config import load_settings

    settings = load_settings()
    options = argparse.Namespace(rate=args.speed_rate, duration=args.speed_seconds, warmup=20.0,
                                 trigger_s=1.0, via="kafka", api_batch=20)
    try:
        row, _, _ = bench_speed.run_once(options, f"{storage} log", settings.speed.read_tasks,
                                         settings.ingest.linger_ms, storage)
    except SystemExit as error:  # e.g. no pin of the measured window reached PostgreSQL in time
        print(f"[{storage}] speed layer: {error}", flush=True)
        return "none", "none"
    print(f"[{storage}] speed layer: {row}", flush=True)
    return row[6], row[8]  # p50, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=500_000, help="records of the produce-rate run")
    parser.add_argument("--log-sizes", type=lambda text: [int(x) for x in text.split(",")],
                        default=[0, 1_000_000, 2_000_000], help="records in the log before each fetch")
    parser.add_argument("--fetch-records", type=int, default=100_000)
    parser.add_argument("--fetch-timeout", type=float, default=120.0,
                        help="seconds the fetch of --fetch-records may take before it counts as stalled")
    parser.add_argument("--batch-records", type=int, default=100,
                        help="records per produced batch while the log grows (batch.num.messages)")
    parser.add_argument("--speed-seconds", type=float, default=0.0,
                        help="seconds of the speed-layer run per storage (0: skip)")
    parser.add_argument("--speed-rate", type=float, default=2000.0, help="posts/s of that run")
    args = parser.parse_args()

    results = []
    for storage in ("memory", "s3"):
        result = measure(storage, args)
        if args.speed_seconds > 0:
            result["p50"], result["p99"] = speed_latency(storage, args)
        results.append(result)

    sizes = args.log_sizes
    header = ["storage", "produce rec/s", *(f"fetch CPU s/100k @{s / 1e6:g}M" for s in sizes),
              "peak RSS MiB", "S3 objects MiB", "speed p50 s", "speed p99 s"]
    rows = []
    for r in results:
        fetch_cells = [cell if isinstance(cell := r["fetch"][s], str) else " + ".join(f"{c:.2f}" for c in cell)
                       for s in sizes]
        rows.append([r["storage"], f"{r['produce/s']:,.0f}", *fetch_cells,
                     " + ".join(f"{m:.0f}" for m in r["rss"]), f"{r['disk MiB']:.0f}",
                     str(r.get("p50", "-")), str(r.get("p99", "-"))])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |")

    memory, s3 = results
    ratios = [f"produce rate {s3['produce/s'] / memory['produce/s']:.2f}"]
    for s in sizes:
        if isinstance(memory["fetch"][s], str) or isinstance(s3["fetch"][s], str):
            ratios.append(f"fetch CPU @{s / 1e6:g}M -")
            continue
        m, d = sum(memory["fetch"][s]), sum(s3["fetch"][s])
        ratios.append(f"fetch CPU @{s / 1e6:g}M {d / m:.2f}" if m else f"fetch CPU @{s / 1e6:g}M -")
    ratios.append(f"peak RSS {sum(s3['rss']) / sum(memory['rss']):.2f}")
    if args.speed_seconds > 0 and "none" not in (s3["p50"], memory["p50"]):
        ratios.append(f"speed p50 {float(s3['p50']) / float(memory['p50']):.2f}, "
                      f"p99 {float(s3['p99']) / float(memory['p99']):.2f}")
    print("ratio s3 / memory: " + "; ".join(ratios))
    print(f"s3 cells 'a + b': a = the broker (Tansu), b = its S3 server; fetch CPU of "
          f"{args.fetch_records:,} new records after the log grew to @N records in batches of "
          f"{args.batch_records}; produce rate: {args.records:,} records to another topic")


if __name__ == "__main__":
    main()
