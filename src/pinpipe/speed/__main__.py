"""``python -m pinpipe.speed [--trigger-s S] [--checkpoint-dir DIR] [--metrics-port PORT]``: the
stream job, ``pinpipe stream``.

Settings come from the usual places (``PINPIPE_*`` environment, config file); the broker and
PostgreSQL are resolved like every pinpipe command (configured, running embedded, or started
for the run). Logs at INFO on stderr; SIGTERM and SIGINT stop the query between micro-batches.
"""

from __future__ import annotations

import sys

from pinpipe.cli import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("stream", argv=argv)


if __name__ == "__main__":
    sys.exit(main())
