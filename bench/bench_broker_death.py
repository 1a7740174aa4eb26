"""What a memory-storage broker's death costs while the lake sink runs, and whether it is told.

For each ``--rate`` (posts/s; a post is a pin, a geo and a user record), in one invocation: an
embedded broker, the lake sink (default settings: a file every 60 s per partition) in a thread,
and the ingest API's publisher (acknowledged records, recorded in the lake's ledger as the API
does) posting at that rate. After ``--warm`` seconds the broker is SIGKILLed; ``--down``
seconds later a new, empty one starts on the same port; the load goes on ``--after`` seconds;
then the sink stops. The baseline is the same rate without a fault.

Prints per run: records acknowledged, in the lake, lost (acknowledged, not in the lake: counted
here from the publisher's acknowledgements and the lake's files, independently of the sink),
lost as reported by the ledger, and the seconds from the kill until the sink had written out
what it had fetched. Removes what it wrote.

::

    .venv/bin/python bench/bench_broker_death.py --rate 100 2000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq

from pinpipe.config import load_settings
from pinpipe.ingest.delivery import Message, PublishError
from pinpipe.ingest.publisher import Publisher
from pinpipe.lake.logs import LogLedger, ack_recorder
from pinpipe.lake.sink import ensure_pipeline_topics, run_sink
from pinpipe.lake.storage import LakeStorage
from pinpipe.services.broker import EmbeddedBroker

TABLES = ("pin", "geo", "user")


def lake_records(lake: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in lake.glob("raw/*/dt=*/*.parquet"))


async def post(publisher: Publisher, rate: float, seconds: float, counter: list[int], tag: str) -> None:
    """``rate`` posts/s in batches every 20 ms; counts what was acknowledged (503s are refused)."""
    step, sent, started = 0.02, 0, time.monotonic()
    while (now := time.monotonic()) - started < seconds:
        due = int((now - started) * rate) - sent
        if due > 0:
            batch = [Message(f"bench.{table}", f'{{"{tag}": {sent + i}}}'.encode(), b"k")
                     for i in range(due) for table in TABLES]  # fmt: skip
            sent += due
            try:
                counter[0] += len(await publisher.publish(batch))
            except PublishError:  # 503/429/502 at the API
                counter[1] += len(batch)
        await asyncio.sleep(step)


def run(rate: float, args: argparse.Namespace, fault: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="pinpipe-bench-death-"))
    broker = EmbeddedBroker(work / "logs")
    broker.start()
    try:
        settings = load_settings(data_dir=work, broker={"bootstrap_servers": broker.bootstrap_servers,
                                                        "topic_prefix": "bench"})  # fmt: skip
        ensure_pipeline_topics(settings, broker.bootstrap_servers)
        stop = threading.Event()
        sink = threading.Thread(target=run_sink, args=(settings, broker.bootstrap_servers, stop))
        sink.start()
        publisher = Publisher({"bootstrap.servers": broker.bootstrap_servers}, on_acked=ack_recorder(settings))
        publisher.start()
        counter = [0, 0]  # acknowledged, refused
        asyncio.run(post(publisher, rate, args.warm, counter, "warm"))
        written_out_s = None
        if fault:
            killed = time.monotonic()
            os.kill(broker.pid, signal.SIGKILL)
            broker.stop()
            before = lake_records(work / "lake")
            deadline = killed + args.down
            while time.monotonic() < deadline:  # the sink writes out what it had fetched
                if written_out_s is None and lake_records(work / "lake") > before:
                    written_out_s = time.monotonic() - killed
                time.sleep(0.05)
            broker.requested_port, broker.cluster_id = broker.port, f"{broker.cluster_id}-next"
            broker.start()
            ensure_pipeline_topics(settings, broker.bootstrap_servers)
        asyncio.run(post(publisher, rate, args.after, counter, "after"))
        publisher.close()
        time.sleep(1.0)  # the last fetches
        stop.set()
        sink.join(60)
        in_lake = lake_records(work / "lake")
        reported = sum(r.records for r in LogLedger(LakeStorage.from_settings(settings)).losses())
        return {"acked": counter[0], "refused": counter[1], "lake": in_lake,
                "lost": counter[0] - in_lake, "reported": reported, "written_out_s": written_out_s}  # fmt: skip
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, nargs="+", default=[100, 2000], help="posts/s")
    parser.add_argument("--warm", type=float, default=10.0)
    parser.add_argument("--down", type=float, default=3.0)
    parser.add_argument("--after", type=float, default=5.0)
    args = parser.parse_args()
    print(f"{'posts/s':>8} {'fault':>9} {'acked':>8} {'refused':>8} {'in lake':>8} {'lost':>6} "
          f"{'reported':>9} {'written out':>12}")  # fmt: skip
    for rate in args.rate:
        for fault in (False, True):
            r = run(rate, args, fault)
            out = "-" if r["written_out_s"] is None else f"{r['written_out_s']:.2f} s"
            print(f"{rate:>8g} {'kill -9' if fault else 'none':>9} {r['acked']:>8,} {r['refused']:>8,} "
                  f"{r['lake']:>8,} {r['lost']:>6,} {r['reported']:>9,} {out:>12}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
