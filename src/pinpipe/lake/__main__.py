"""``python -m pinpipe.lake --bootstrap HOST:PORT --data-dir DIR [--metrics-port P] ...``: the sink
as a bare process, for the tests and benchmarks that kill it: ``pinpipe sink --json``.

Takes the options of ``pinpipe sink`` (``--root``, ``--topic-prefix``, ``--group``,
``--rotate-records``, ``--session-timeout-ms``, ...); logs at INFO on stderr, prints the run's
stats as one JSON line on a clean exit and exits 1 on a terminal error.
"""

from __future__ import annotations

import sys

from pinpipe.cli import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("sink", "--json", argv=argv)


if __name__ == "__main__":
    sys.exit(main())
