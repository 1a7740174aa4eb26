"""Lake sink throughput and memory, against the original projects' one-JSON-file-per-event.

    .venv/bin/python bench/bench_lake_sink.py [--records 2000000] [--baseline 20000]
        [--repeat 1] [--per-record] [--against SRC_DIR]

Starts an embedded Tansu broker, pre-fills ``<prefix>.pin|.geo|.user`` (3 partitions each)
with the emulator's rows as JSON, one post (pin, geo, user) after another, then:

1. drains them with the lake sink (``python -m pinpipe.lake``, default settings) into a local
   lake; time runs from the sink's partition assignment until every record is consumed and
   the sink, stopped by SIGTERM, has written the rest and exited; peak
   RSS is the sink process's ``ru_maxrss`` (RUSAGE_CHILDREN, after it exits);
2. the baseline: the first ``--baseline`` records consumed and written one JSON file per
   event (what the originals' S3 sink connector with ``flush.size=1`` did), without fsync.

The machine is shared, so a before/after comparison is only fair inside one run: each variant
drains the same pre-filled topics (a consumer group and a lake of its own), interleaved
``--repeat`` times. ``--per-record`` adds the sink with its per-record buffering loop for every
batch (the loop the bulk path replaced); ``--against SRC_DIR`` adds the ``pinpipe`` package of
another source tree (e.g. ``git archive <commit> src | tar -x -C /tmp/old`` then
``--against /tmp/old/src``).

Prints a table. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console
from rich.table import Table as RichTable

from pinpipe.events import all_topics, topic_name
from pinpipe.services.broker import EmbeddedBroker, free_port
from pinpipe.services.topics import ensure_topics
from pinpipe.source.generator import generate_tables

PREFIX = "bench"
TABLES = ("pin", "geo", "user")
PARTITIONS = 3


def source_values(rows: int) -> dict[str, list[bytes]]:
    """The emulator's rows per table, as JSON values (datetimes as ISO text)."""
    tables = generate_tables(rows=rows)
    encode = lambda row: json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=str).encode()  # noqa: E731
    return {table: [encode(row) for row in tables.rows(table)] for table in TABLES}


def prefill(bootstrap: str, values: dict[str, list[bytes]], total: int) -> float:
    """``total`` records, one post (pin, geo, user) after another, like the emulator."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all",
                         "batch.size": 1_000_000, "queue.buffering.max.kbytes": 512_000,
                         "compression.type": "none"})  # fmt: skip
    started = time.perf_counter()
    topics = [topic_name(PREFIX, table) for table in TABLES]
    columns = [values[table] for table in TABLES]
    for index in range(total):
        table = index % 3
        column = columns[table]
        value = column[(index // 3) % len(column)]
        while True:
            try:
                producer.produce(topics[table], value, key=str(index % 11_154).encode())
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0, "records left unacknowledged"
    return time.perf_counter() - started


def consumed(metrics_url: str) -> float:
    """``pinpipe_lake_records_consumed`` from the sink's /metrics (0 until it answers)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("pinpipe_lake_records_consumed_total "):
            return float(line.split()[1])
    return 0


# ``python -m pinpipe.lake`` with every batch sent through the sink's per-record loop (run with
# ``python -c``: importing this file would load the generator and inflate the sink's RSS).
PER_RECORD_SINK = """
import sys
from pinpipe.lake.__main__ import main
from pinpipe.lake.buffer import BatchingSink
BatchingSink.add_run = lambda self, key, run: False  # as if every run needed the per-record loop
sys.exit(main(sys.argv[1:]))
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_sink(bootstrap: str, workdir: Path, total: int, variant: str, against: str | None,
             run: int) -> dict:
    """Time from partition assignment until every record is consumed *and* the sink has
    written it and exited (SIGTERM once all are consumed: the last files are flushed then)."""
    name = f"{variant}-{run}"
    group = f"bench-lake-sink-{name}"
    workdir = workdir / name
    workdir.mkdir()
    log_path = workdir / "sink.log"
    port = free_port()
    arguments = ["--bootstrap", bootstrap, "--data-dir", str(workdir), "--topic-prefix", PREFIX,
                 "--group", group, "--metrics-port", str(port)]  # fmt: skip
    env = dict(os.environ)
    if variant == "per-record":
        command = [sys.executable, "-c", PER_RECORD_SINK, *arguments]
    else:
        command = [sys.executable, "-m", "pinpipe.lake", *arguments]
        if variant == "against":
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [against, env.get("PYTHONPATH")]))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    spawned = time.perf_counter()
    assigned = None
    while assigned is None:
        if "assigned [(" in log_path.read_text(errors="replace"):
            assigned = time.perf_counter()
            cpu_at_start = cpu_seconds(process.pid)
        elif process.poll() is not None or time.perf_counter() - spawned > 120:
            raise SystemExit(f"sink did not start:\n{log_path.read_text()}")
        else:
            time.sleep(0.05)
    while consumed(f"http://127.0.0.1:{port}/metrics") < total:
        if process.poll() is not None:
            raise SystemExit(f"sink exited:\n{log_path.read_text()}")
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    # wait4: this child's own peak RSS (RUSAGE_CHILDREN would be the maximum of all children)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"sink failed:\n{log_path.read_text()}")
    done = time.perf_counter()
    stats = json.loads(log_path.read_text().strip().splitlines()[-1])
    assert stats["records"] == total, stats
    peak_kib = usage.ru_maxrss
    lake = workdir / "lake"
    files = list(lake.rglob("*.parquet"))
    result = {
        "seconds": done - assigned,
        "startup": assigned - spawned,
        "rate": total / (done - assigned),
        "peak_rss_mb": peak_kib / 1024,
        # CPU the sink process used per record while timed: steadier than wall time when
        # neighbours load the machine.
        "cpu_us": (usage.ru_utime + usage.ru_stime - cpu_at_start) / total * 1e6,
        "files": len(files),
        "lake_mb": sum(f.stat().st_size for f in files) / 1e6,
    }
    shutil.rmtree(lake, ignore_errors=True)  # a 2M-record lake per run adds up
    return result


def baseline(bootstrap: str, workdir: Path, topic: str, count: int) -> dict:
    """One JSON object per event, one file per object (Kafka Connect S3 sink, flush.size=1)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-baseline",
                         "enable.auto.commit": False})  # fmt: skip
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    out = workdir / "json" / "topics" / topic
    written = 0
    started = time.perf_counter()
    while written < count:
        for message in consumer.consume(min(1000, count - written), 1.0):
            if message.error():
                continue
            directory = out / f"partition={message.partition()}"
            directory.mkdir(parents=True, exist_ok=True)
            record = json.loads(message.value())
            name = f"{topic}+{message.partition()}+{message.offset():010d}.json"
            with open(directory / name, "w") as handle:
                json.dump(record, handle, ensure_ascii=False)
            written += 1
    seconds = time.perf_counter() - started
    consumer.close()
    return {"seconds": seconds, "rate": written / seconds, "files": written}


VARIANTS = {
    "bulk": "lake sink (Parquet zstd)",
    "per-record": "lake sink, per-record loop",
    "against": "lake sink from --against",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--baseline", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=1, help="drains per variant, interleaved")
    parser.add_argument("--per-record", action="store_true",
                        help="also drain with the per-record buffering loop")
    parser.add_argument("--against", metavar="SRC_DIR",
                        help="also drain with the pinpipe package found in SRC_DIR")
    args = parser.parse_args()
    variants = ["bulk"] + ["per-record"] * args.per_record + ["against"] * bool(args.against)
    console = Console(width=max(Console().width, 150))  # the table's width even in a log
    workdir = Path(tempfile.mkdtemp(prefix="pinpipe-bench-lake-"))
    try:
        values = source_values(11_154)
        sizes = [len(value) for table in TABLES for value in values[table]]
        mean = sum(sizes) / len(sizes)
        runs: list[tuple[str, dict]] = []
        with EmbeddedBroker(workdir / "logs") as broker:
            bootstrap = broker.bootstrap_servers
            ensure_topics({"bootstrap.servers": bootstrap}, all_topics(PREFIX), PARTITIONS)
            topic = topic_name(PREFIX, "pin")
            console.print(f"pre-filling {args.records:,} pin/geo/user records (mean {mean:.0f} B) ...")
            fill = prefill(bootstrap, values, args.records)
            console.print(f"pre-filled in {fill:.1f} s; draining with the lake sink ...")
            for run in range(args.repeat):
                # Alternate the order between repeats: a neighbour's load hits both alike.
                for variant in variants if run % 2 == 0 else variants[::-1]:
                    result = run_sink(bootstrap, workdir, args.records, variant, args.against, run)
                    console.print(f"  {VARIANTS[variant]}: {result['rate']:,.0f} records/s, "
                                  f"{result['cpu_us']:.1f} CPU µs/record, "
                                  f"peak RSS {result['peak_rss_mb']:.0f} MB")  # fmt: skip
                    runs.append((variant, result))
            console.print("baseline: one JSON file per event ...")
            base = baseline(bootstrap, workdir, topic, min(args.baseline, args.records))
        table = RichTable(title=f"lake sink, {args.records:,} records x {mean:.0f} B, "
                                f"{os.cpu_count()} cores")  # fmt: skip
        for column in ("writer", "records", "seconds", "records/s", "CPU µs/record", "files",
                       "peak RSS", "vs JSON", "note"):  # fmt: skip
            table.add_column(column, justify="right" if column not in ("writer", "note") else "left")
        for variant in variants:
            results = sorted((r for v, r in runs if v == variant), key=lambda r: r["rate"])
            sink = results[len(results) // 2]  # the median run
            spread = (f"; {len(results)} runs {results[0]['rate']:,.0f}-{results[-1]['rate']:,.0f}/s"
                      if len(results) > 1 else "")  # fmt: skip
            table.add_row(VARIANTS[variant], f"{args.records:,}", f"{sink['seconds']:.1f}",
                          f"{sink['rate']:,.0f}", f"{sink['cpu_us']:.1f}", str(sink["files"]),
                          f"{max(r['peak_rss_mb'] for r in results):.0f} MB",
                          f"{sink['rate'] / base['rate']:.0f}x",
                          f"{sink['lake_mb']:.0f} MB on disk{spread}")  # fmt: skip
        table.add_row("one JSON file per event", f"{base['files']:,}", f"{base['seconds']:.1f}",
                      f"{base['rate']:,.0f}", "-", f"{base['files']:,}", "-", "1x",
                      "baseline (no fsync)")  # fmt: skip
        console.print(table)
        startup = max(r["startup"] for _, r in runs)
        console.print(f"records/s: median run; peak RSS: the highest run. Sink start + group join "
                      f"(up to {startup:.1f} s) not timed; targets: >= 150,000 records/s, "
                      "peak RSS < 400 MB")  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
