"""The embedded broker's CPU as its log grows: why a long speed-layer run drifts on this machine.

Starts the embedded Tansu broker and produces ``--rate`` records/s (the API's producer settings:
acks=all, idempotent) to three 3-partition topics for ``--duration`` seconds, in three modes,
each on a fresh broker:

``produce``  (the baseline) producing only;
``probe``    plus :class:`~pinpipe.speed.offsets.EndProbe` finding the ends every second, as the
             stream job does each trigger;
``read``     plus reading each second's new records with one assigned consumer, as the stream
             job's read tasks do.

Prints, per mode, the broker's CPU seconds per ``--every`` seconds at growing log sizes, and the
ratio of the last interval to the first::

    .venv/bin/python bench/bench_broker_fetch.py --rate 6000 --duration 150
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import psutil

TOPICS = ("bench.a", "bench.b", "bench.c")


def broker_process() -> psutil.Process:
    """The Tansu process (the broker this script started is the only one here)."""
    for process in psutil.process_iter(["name"]):
        if (process.info["name"] or "").startswith("tansu"):
            return process
    raise SystemExit("no tansu process found")


def consume_loop(bootstrap: str, mode: str, stop: threading.Event) -> None:
    """Every second: probe the ends, and in ``read`` mode read the records up to them."""
    from confluent_kafka import Consumer, TopicPartition

    from pinpipe.speed.offsets import EndProbe

    probe = EndProbe({"bootstrap.servers": bootstrap}, TOPICS)
    known = {topic: {str(p): 0 for p in range(3)} for topic in TOPICS}
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-reader",
                       "enable.auto.commit": False, "auto.offset.reset": "error",
                       "fetch.wait.max.ms": 50, "log_level": 3})
    try:
        while not stop.is_set():
            began = time.monotonic()
            ends = probe.ends(known)
            if mode == "read":
                wanted = {(t, int(p)): ends[t][p] for t in TOPICS for p in ends[t] if ends[t][p] > known[t][p]}
                reader.assign([TopicPartition(t, p, known[t][str(p)]) for t, p in wanted])
                while wanted and not stop.is_set():
                    for message in reader.consume(10_000, timeout=0.05):
                        key = (message.topic(), message.partition())
                        if message.error() is None and key in wanted and message.offset() + 1 >= wanted[key]:
                            del wanted[key]
                reader.unassign()
            known = ends
            stop.wait(max(0.0, 1.0 - (time.monotonic() - began)))
    finally:
        reader.close()
        probe.close()


def run_mode(mode: str, args) -> list[tuple[int, float, int]]:
    """Rows of (records produced, broker CPU seconds in the interval, broker RSS MiB)."""
    from confluent_kafka import Producer

    from pinpipe.config import load_settings
    from pinpipe.services.resolve import kafka_bootstrap
    from pinpipe.services.topics import ensure_topics

    workdir = Path(tempfile.mkdtemp(prefix="pinpipe-bench-broker-", dir="/tmp"))
    rows = []
    with kafka_bootstrap(load_settings(data_dir=workdir)) as bootstrap:
        broker = broker_process()
        ensure_topics({"bootstrap.servers": bootstrap}, list(TOPICS), 3)
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": args.linger_ms, "acks": "all",
                             "enable.idempotence": True})
        value = json.dumps({"index": 1, "unique_id": "x" * 36, "title": "t" * 100}).encode()
        stop = threading.Event()
        consumer = None
        if mode != "produce":
            consumer = threading.Thread(target=consume_loop, args=(bootstrap, mode, stop), daemon=True)
            consumer.start()
        began = last = time.monotonic()
        sent, cpu_before = 0, sum(broker.cpu_times()[:2])
        while time.monotonic() - began < args.duration:
            due = int((time.monotonic() - began) * args.rate)
            while sent < due:
                producer.produce(TOPICS[sent % 3], value=value)
                sent += 1
            producer.poll(0)
            time.sleep(0.005)
            if time.monotonic() - last >= args.every:
                cpu = sum(broker.cpu_times()[:2])
                rows.append((sent, cpu - cpu_before, broker.memory_info().rss >> 20))
                cpu_before, last = cpu, time.monotonic()
        stop.set()
        if consumer is not None:
            consumer.join(timeout=30)
        producer.flush(60)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=6000, help="records per second")
    parser.add_argument("--duration", type=float, default=150.0, help="seconds per mode")
    parser.add_argument("--every", type=float, default=15.0, help="seconds per CPU sample")
    parser.add_argument("--linger-ms", type=float, default=2.0, help="the producer's linger.ms")
    parser.add_argument("--modes", default="produce,probe,read", help="comma-separated modes to run")
    args = parser.parse_args()
    results = {mode: run_mode(mode, args) for mode in args.modes.split(",")}
    print(f"| mode | records in the log | broker CPU s per {args.every:g} s | broker RSS MiB |")
    print("|---|---|---|---|")
    for mode, rows in results.items():
        for sent, cpu, rss in rows:
            print(f"| {mode} | {sent:,} | {cpu:.1f} | {rss} |")
    for mode, rows in results.items():
        if len(rows) >= 2 and rows[0][1] > 0:
            print(f"{mode}: last interval / first = {rows[-1][1] / rows[0][1]:.2f}")


if __name__ == "__main__":
    main()
