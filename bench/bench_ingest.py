"""Benchmark of the ingest API on this machine, in one invocation; prints a table.

    .venv/bin/python bench/bench_ingest.py [--seconds 5]

Starts an embedded broker and the API (one uvicorn worker, a separate process) and drives it
with a keep-alive HTTP/1.1 load generator written on raw asyncio sockets (no wrk here), run in
this process. Measures:

1. the ceiling: requests/s of a bare route in the same server that reads the body and returns
   a constant, with the same single-record body;
2. single-record REST-proxy requests/s (acknowledged by the broker), and the ratio to 1;
3. records/s acknowledged with 500-record REST-proxy batches;
4. p50/p99 latency of single-record requests at 50% of the rate measured in 2 (open loop:
   latency counts from the scheduled send time, so a stall is not hidden);
5. the API process's peak RSS (VmHWM).

The load generator, the API and the broker share the machine's cores: the figures are a floor
for the API, not a property of it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from fastapi import Request
from fastapi.responses import Response

CONSTANT_PATH = "/bench/constant"
TOPIC_PATH = "/topics/bench.pin"
REST_PROXY = "application/vnd.kafka.json.v2+json"


# --- the server process ----------------------------------------------------------------------


async def constant(request: Request) -> Response:
    """The ceiling: a FastAPI route in the same app that reads the body, answers a constant."""
    await request.body()
    return Response(b'{"ok":true}', media_type="application/json")


def serve(port: int, bootstrap: str, prefix: str) -> None:
    import uvicorn

    from pinpipe.config import Settings
    from pinpipe.ingest import create_app

    settings = Settings(broker={"bootstrap_servers": bootstrap, "topic_prefix": prefix})
    app = create_app(settings)
    app.add_api_route(CONSTANT_PATH, constant, methods=["POST"], include_in_schema=False)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools")  # fmt: skip


# --- the load generator ----------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    statuses: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.statuses[200]

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def http_request(path: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def load(port: int, requests: list[bytes], connections: int, seconds: float,
               rate: float | None = None, warmup: float = 1.0) -> Run:  # fmt: skip
    """Closed loop (as fast as answers come) or, with ``rate`` (requests/s), open loop."""
    run = Run(seconds)
    start = time.perf_counter() + warmup
    end = start + seconds

    async def connection(number: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        index = number
        interval = connections / rate if rate else 0.0
        scheduled = time.perf_counter() + (number / rate if rate else 0.0)
        try:
            while True:
                if rate:
                    delay = scheduled - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    sent = scheduled
                    scheduled += interval
                else:
                    sent = time.perf_counter()
                if sent >= end:
                    return
                status = await _exchange(reader, writer, requests[index % len(requests)])
                index += connections
                done = time.perf_counter()
                if sent >= start:
                    run.statuses[status] += 1
                    run.latencies.append(done - sent)
        finally:
            writer.close()

    await asyncio.gather(*(connection(n) for n in range(connections)))
    return run


# --- the benchmark ---------------------------------------------------------------------------


def build_bodies(count: int, batch: int) -> list[bytes]:
    from pinpipe.events import DatetimeStyle, Table
    from pinpipe.source.generator import generate_tables
    from pinpipe.source.wire import encode_row

    tables = generate_tables(seed=7, rows=max(count * batch, 1000))
    pins = [encode_row(row, DatetimeStyle.ISO) for row in tables.rows(Table.PIN)]
    return [
        orjson.dumps(
            {"records": [{"value": pins[(i * batch + j) % len(pins)]} for j in range(batch)]}
        )
        for i in range(count)
    ]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("the API did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement time per step")
    parser.add_argument(
        # Little's law: a record waits up to the producer's linger.ms (20 ms) for its batch, so
        # ~4,000 req/s keep ~100 requests in flight; with fewer connections the step measures
        # the linger, not the server.
        "--connections", type=int, default=128, help="connections, single-record steps"
    )
    parser.add_argument("--batch-connections", type=int, default=8, help="connections, batch step")
    parser.add_argument(
        "--serve", nargs=3, metavar=("PORT", "BOOTSTRAP", "PREFIX"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], args.serve[2])
        return

    import uvloop

    from pinpipe.services.broker import EmbeddedBroker, free_port

    log_dir = Path(tempfile.mkdtemp(prefix="pinpipe-bench-"))
    broker = EmbeddedBroker(log_dir)
    broker.start()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), broker.bootstrap_servers, "bench"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        singles = [http_request(TOPIC_PATH, body, REST_PROXY) for body in build_bodies(2000, 1)]
        constants = [http_request(CONSTANT_PATH, body, REST_PROXY) for body in build_bodies(50, 1)]
        batches = [http_request(TOPIC_PATH, body, REST_PROXY) for body in build_bodies(20, 500)]
        seconds = args.seconds

        def measure(requests: list[bytes], connections: int, rate: float | None = None) -> Run:
            return uvloop.run(load(port, requests, connections, seconds, rate))

        ceiling = measure(constants, args.connections)
        single = measure(singles, args.connections)
        batch = measure(batches, args.batch_connections)
        single_rate = single.ok / seconds
        paced = measure(singles, args.connections, rate=single_rate / 2)
        rss = peak_rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
        broker.stop()
        shutil.rmtree(log_dir, ignore_errors=True)

    def other(run: Run) -> str:
        failed = sum(count for status, count in run.statuses.items() if status != 200)
        return "" if not failed else f"  ({failed} non-200: {dict(run.statuses)})"

    ceiling_rate = ceiling.ok / seconds
    rows = [
        ("bare constant route (ceiling), req/s", f"{ceiling_rate:,.0f}", other(ceiling)),
        ("single-record REST proxy, req/s", f"{single_rate:,.0f}", other(single)),
        ("  ratio to the ceiling (target >= 0.5)", f"{single_rate / ceiling_rate:.2f}", ""),
        (
            "500-record batches, records/s (target >= 50,000)",
            f"{batch.ok * 500 / seconds:,.0f}",
            other(batch),
        ),
        (
            "  batch request p50 / p99, ms",
            f"{batch.percentile(0.5) * 1e3:.1f} / {batch.percentile(0.99) * 1e3:.1f}",
            "",
        ),
        (
            f"single-record at {single_rate / 2:,.0f} req/s (50%), p50 ms",
            f"{paced.percentile(0.5) * 1e3:.2f}",
            other(paced),
        ),
        (
            f"single-record at {single_rate / 2:,.0f} req/s (50%), p99 ms",
            f"{paced.percentile(0.99) * 1e3:.2f}",
            "",
        ),
        ("API peak RSS, MiB", f"{rss:.0f}", ""),
    ]
    width = max(len(name) for name, _, _ in rows)
    print(f"\ningest API benchmark: {os.cpu_count()} cores, {seconds:.0f} s per step, "
          f"{args.connections} connections (batches: {args.batch_connections})")  # fmt: skip
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>12}{note}")


if __name__ == "__main__":
    main()
