"""``python -m pinpipe.speed [--trigger-s S] [--checkpoint-dir DIR] [--metrics-port PORT]``: run the stream job.

Settings come from the usual places (``PINPIPE_*`` environment, config file); the broker and
PostgreSQL are resolved like every pinpipe command (configured, running embedded, or started
for the run). SIGTERM and SIGINT stop the query between micro-batches.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from pinpipe.config import load_settings
from pinpipe.services.resolve import kafka_bootstrap, postgres_dsn
from pinpipe.speed.job import run_stream


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pinpipe.speed", description=__doc__)
    parser.add_argument("--trigger-s", type=float, default=None, help="micro-batch interval (s)")
    parser.add_argument("--checkpoint-dir", default=None, help="Spark checkpoint directory")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus /metrics on 127.0.0.1:PORT")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = load_settings()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    trigger = args.trigger_s if args.trigger_s is not None else settings.speed.trigger_s
    with kafka_bootstrap(settings) as bootstrap, postgres_dsn(settings) as dsn:
        run_stream(settings, bootstrap, dsn, trigger_s=trigger, stop_event=stop,
                   checkpoint_dir=args.checkpoint_dir, metrics_port=args.metrics_port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
