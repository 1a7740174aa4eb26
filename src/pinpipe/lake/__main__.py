"""``python -m pinpipe.lake --bootstrap HOST:PORT --data-dir DIR``: the sink as a bare process.

Used by tests and benchmarks that kill the sink; ``pinpipe sink`` is the user-facing command.
Prints the run's stats as one JSON line on a clean exit; exits 1 on a terminal error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from pinpipe.config import load_settings
from pinpipe.lake.errors import SinkStopped
from pinpipe.lake.sink import run_sink


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pinpipe.lake", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--root", help="lake root (local path or s3://bucket/prefix)")
    parser.add_argument("--topic-prefix")
    parser.add_argument("--group")
    parser.add_argument("--rotate-records", type=int)
    parser.add_argument("--rotate-bytes", type=int)
    parser.add_argument("--rotate-age-s", type=float)
    parser.add_argument("--max-buffer-bytes", type=int)
    parser.add_argument("--session-timeout-ms", type=int)
    parser.add_argument("--s3-endpoint-url")
    parser.add_argument("--metrics-port", type=int)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")

    lake = {
        name: value
        for name, value in {
            "root": args.root,
            "sink_group_id": args.group,
            "rotate_records": args.rotate_records,
            "rotate_bytes": args.rotate_bytes,
            "rotate_age_s": args.rotate_age_s,
            "max_buffer_bytes": args.max_buffer_bytes,
            "session_timeout_ms": args.session_timeout_ms,
            "s3_endpoint_url": args.s3_endpoint_url,
        }.items()
        if value is not None
    }
    broker = {"bootstrap_servers": args.bootstrap}
    if args.topic_prefix:
        broker["topic_prefix"] = args.topic_prefix
    settings = load_settings(data_dir=args.data_dir, broker=broker, lake=lake)
    try:
        stats = run_sink(settings, args.bootstrap, metrics_port=args.metrics_port)
    except SinkStopped as exc:
        print(f"lake sink stopped: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(dataclasses.asdict(stats)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
