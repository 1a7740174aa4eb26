"""``python -m pinpipe.batch``: the batch job without the CLI, for spark-submit and job runners.

    spark-submit --master spark://host:7077 --py-files pinpipe-0.1.0-py3-none-any.whl \\
        deploy/spark/pinpipe_batch.py --date 2026-11-21

Settings come from ``PINPIPE_*`` variables or ``--config``; the exit code is 1 when the
data-quality checks fail.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date

from pinpipe.batch import QualityError, date_range, run_batch
from pinpipe.config import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pinpipe-batch", description=__doc__.splitlines()[0])
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--date", type=date.fromisoformat, help="one day, YYYY-MM-DD")
    when.add_argument("--range", nargs=2, type=date.fromisoformat, metavar=("FROM", "TO"))
    when.add_argument("--all", action="store_true", help="every raw partition")
    parser.add_argument("--config", help="TOML config file")
    parser.add_argument("--no-publish", action="store_true", help="do not write PostgreSQL")
    args = parser.parse_args(argv)
    dates = [args.date] if args.date else date_range(*args.range) if args.range else None
    settings = load_settings(args.config)
    try:
        result = run_batch(settings, dates=dates, all_dates=args.all, publish=not args.no_publish)
    except QualityError as error:
        print(f"data-quality checks failed: {error}", file=sys.stderr)
        return 1
    print(result.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
