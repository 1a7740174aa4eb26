"""Speed-layer latency: broker acknowledgement -> row visible in PostgreSQL.

Starts an embedded broker and PostgreSQL (or uses PINPIPE_* settings), runs the stream job in
this process, produces ``--rate`` posts per second (three records each: pin, geo, user, as the
ingest API stores them) for ``--duration`` seconds, then reports, per pin, the time from the
producer's delivery acknowledgement to the row's ``updated_at`` (commit time of its micro-batch):
p50 / p99 / max, and the lag (acknowledged but not yet visible) sampled every second.

    .venv/bin/python bench/bench_speed.py --rate 2000 --duration 300

This bypasses the HTTP API (the API adds its own produce latency, measured by bench_ingest.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg


def main() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pinpipe.speed").setLevel(logging.INFO)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2000.0, help="posts per second (x3 records)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of steady load")
    parser.add_argument("--trigger-s", type=float, default=1.0)
    args = parser.parse_args()

    from confluent_kafka import Producer

    from pinpipe.config import load_settings
    from pinpipe.events import Table, topic_name
    from pinpipe.services.resolve import kafka_bootstrap, postgres_dsn
    from pinpipe.speed.job import run_stream

    workdir = Path(tempfile.mkdtemp(prefix="pinpipe-bench-speed-", dir="/tmp"))
    workdir.chmod(0o755)
    settings = load_settings(data_dir=workdir, speed={"trigger_s": args.trigger_s})
    prefix = settings.broker.topic_prefix
    with kafka_bootstrap(settings) as bootstrap, postgres_dsn(settings) as dsn:
        stop = threading.Event()
        job = threading.Thread(
            target=run_stream, args=(settings, bootstrap, dsn),
            kwargs={"trigger_s": args.trigger_s, "stop_event": stop}, daemon=True,
        )
        job.start()
        acked: dict[str, float] = {}
        producer = Producer({**settings.broker.client_config(bootstrap), "linger.ms": 2, "acks": "all"})

        def delivered(error, message) -> None:
            if error is None and message.topic().endswith(".pin"):
                acked[message.key().decode()] = time.time()

        # warm up: one post through the whole path before the clock starts
        warm = {"index": 0, "unique_id": "warm-up", "category": "art"}
        producer.produce(topic_name(prefix, Table.PIN), key=b"warm-up", value=json.dumps(warm).encode())
        producer.flush(30)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(dsn) as conn:
                    if conn.execute("SELECT count(*) FROM pinpipe.pin").fetchone()[0]:
                        break
            except psycopg.Error:
                pass
            time.sleep(0.5)
        acked.clear()
        print(f"producing {args.rate:.0f} posts/s for {args.duration:.0f} s ...", flush=True)
        began, sent, lag_samples = time.monotonic(), 0, []
        next_sample = began + 1
        while time.monotonic() - began < args.duration:
            due = int((time.monotonic() - began) * args.rate)
            while sent < due:
                ind, uid = sent, str(uuid.uuid4())
                now = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
                records = {
                    Table.PIN: {"index": ind, "unique_id": uid, "title": "t", "description": "d",
                                "poster_name": "p", "follower_count": "26k", "tag_list": "a,b",
                                "is_image_or_video": "image", "image_src": "https://x/y.jpg",
                                "downloaded": 1, "save_location": "Local save in /data/art", "category": "art"},
                    Table.GEO: {"ind": ind, "timestamp": now, "latitude": -5.0, "longitude": 10.0, "country": "Chad"},
                    Table.USER: {"ind": ind, "first_name": "A", "last_name": "B", "age": 30, "date_joined": now},
                }
                for table, record in records.items():
                    key = uid if table is Table.PIN else str(ind)
                    producer.produce(topic_name(prefix, table), key=key.encode(),
                                     value=json.dumps(record, separators=(",", ":")).encode(),
                                     on_delivery=delivered)
                sent += 1
            producer.poll(0)
            if time.monotonic() >= next_sample:
                next_sample += 1
                with psycopg.connect(dsn) as conn:
                    visible = conn.execute("SELECT count(*) FROM pinpipe.pin").fetchone()[0] - 1
                lag_samples.append(len(acked) - visible)
            time.sleep(0.002)
        producer.flush(60)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with psycopg.connect(dsn) as conn:
                if conn.execute("SELECT count(*) FROM pinpipe.pin").fetchone()[0] > len(acked):
                    break
            time.sleep(0.5)
        stop.set()
        job.join(timeout=60)
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT unique_id, extract(epoch FROM updated_at) FROM pinpipe.pin").fetchall()
            batch_stats = conn.execute(
                "SELECT count(*), avg(records), extract(epoch FROM max(committed_at) - min(committed_at))"
                " FROM pinpipe.stream_batch"
            ).fetchone()
    latencies = sorted(float(seen) - acked[uid] for uid, seen in rows if uid in acked)
    if not latencies:
        print("no rows reached PostgreSQL")
        return
    quantiles = statistics.quantiles(latencies, n=100)
    count, mean_records, span = batch_stats
    print(f"micro-batches {count}, {float(mean_records or 0):.0f} records each on average, "
          f"one every {float(span or 0) / max(count - 1, 1):.2f} s")
    print(f"posts acknowledged {len(acked)}, visible {len(latencies)}")
    print(f"latency ack -> PostgreSQL: p50 {quantiles[49]:.2f} s, p99 {quantiles[98]:.2f} s, max {latencies[-1]:.2f} s")
    if lag_samples:
        third = max(1, len(lag_samples) // 3)
        print(f"lag (posts not yet visible): first third avg {statistics.mean(lag_samples[:third]):.0f}, "
              f"last third avg {statistics.mean(lag_samples[-third:]):.0f}, max {max(lag_samples)}")


if __name__ == "__main__":
    main()
