"""Where a record lands in the lake's raw layer: table, date partition and file name.

``raw/<table>/dt=<YYYY-MM-DD>/<topic>+<partition>+<first offset, 20 digits>.parquet``
(DATA_SPEC.md section 5). When the broker's log started again empty (a memory-storage broker
restarted: offsets begin again at 0, see :mod:`pinpipe.lake.logs`), the files of the n-th later
log end in ``+<n>.parquet``, so they never replace a file of an earlier log. The table is the topic's suffix (``<prefix>.pin`` -> ``pin``); the
dead-letter topic ``<prefix>.dlq`` goes to ``_dlq``. The date is the UTC day of the broker
timestamp. Kafka topic names never contain ``+``, so the name splits back unambiguously.

Temporary files start with ``.``: pyarrow datasets, Spark and :func:`parse_file_name` all
ignore them, so a reader listing the lake never sees a file being written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from pinpipe.errors import TerminalError
from pinpipe.events import DLQ_SUFFIX, Table

RAW_DIR = "raw"
DLQ_TABLE = "_dlq"
SUFFIX = ".parquet"
OFFSET_DIGITS = 20
MS_PER_DAY = 86_400_000
_EPOCH = date(1970, 1, 1)


class UnknownTopic(TerminalError, ValueError):
    """The topic is not one of the pipeline's topics (no table to put it in)."""


def table_for_topic(topic: str) -> str:
    """``pin`` / ``geo`` / ``user`` for a table topic, ``_dlq`` for the dead-letter topic."""
    suffix = topic.rsplit(".", 1)[-1]
    if suffix == DLQ_SUFFIX:
        return DLQ_TABLE
    try:
        return Table(suffix).value
    except ValueError:
        raise UnknownTopic(f"topic {topic!r} does not end in .pin, .geo, .user or .dlq") from None


def day_of(timestamp_ms: int) -> int:
    """Days since 1970-01-01 (UTC) of a millisecond epoch timestamp."""
    return timestamp_ms // MS_PER_DAY


def dt_value(day: int) -> str:
    """``YYYY-MM-DD`` of a day number from :func:`day_of`."""
    return (_EPOCH + timedelta(days=day)).isoformat()


def file_name(topic: str, partition: int, first_offset: int, generation: int = 0) -> str:
    log = f"+{generation}" if generation else ""
    return f"{topic}+{partition}+{first_offset:0{OFFSET_DIGITS}d}{log}{SUFFIX}"


def file_path(table: str, day: int, topic: str, partition: int, first_offset: int,
              generation: int = 0) -> str:  # fmt: skip
    """The file's path relative to the lake root (always ``/``-separated)."""
    name = file_name(topic, partition, first_offset, generation)
    return f"{RAW_DIR}/{table}/dt={dt_value(day)}/{name}"


@dataclass(frozen=True)
class RawFile:
    """What a raw file's path says about it."""

    table: str
    dt: str
    topic: str
    partition: int
    first_offset: int
    generation: int = 0  # which log of the broker: 0 the first, n after n restarts that emptied it


def parse_file_name(path: str) -> RawFile | None:
    """The coordinates in a raw file's path; None for anything else (temporary files too)."""
    parts = path.rstrip("/").split("/")
    if len(parts) < 3:
        return None
    table, dt_dir, name = parts[-3], parts[-2], parts[-1]
    if name.startswith((".", "_")) or not name.endswith(SUFFIX) or not dt_dir.startswith("dt="):
        return None
    fields = name[: -len(SUFFIX)].split("+")
    if len(fields) not in (3, 4) or not all(field.isdigit() for field in fields[1:]):
        return None
    generation = int(fields[3]) if len(fields) == 4 else 0
    return RawFile(table, dt_dir[3:], fields[0], int(fields[1]), int(fields[2]), generation)
