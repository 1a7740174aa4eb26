"""``python -m pinpipe.batch``: the batch job for spark-submit and job runners, ``pinpipe batch --json``.

    spark-submit --master spark://host:7077 --py-files pinpipe-0.1.0-py3-none-any.whl \\
        deploy/spark/pinpipe_batch.py --date 2026-11-21

One of ``--date D``, ``--range FROM TO`` (or ``--from FROM --to TO``), ``--all``; with
``--no-publish`` PostgreSQL is not written. Settings come from ``PINPIPE_*`` variables or
``--config FILE``. Prints the run's counts as JSON; the exit code is 1 when the
data-quality checks fail, 2 for wrong arguments.
"""

from __future__ import annotations

import sys

from pinpipe.cli import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("batch", "--json", argv=argv)


if __name__ == "__main__":
    sys.exit(main())
