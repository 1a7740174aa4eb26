"""The record contracts: the three source tables, their topics and natural keys.

DATA_SPEC.md section 1 is the source of truth; this module is its single translation into
code. Spark schemas for the same records are added beside these when the batch layer lands.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone


class Table(str, enum.Enum):
    """One of the three source tables; its value is the topic suffix."""

    PIN = "pin"
    GEO = "geo"
    USER = "user"

    @property
    def natural_key(self) -> str:
        """The field identifying one record of this table (the Kafka key)."""
        return "unique_id" if self is Table.PIN else "ind"

    @property
    def row_field(self) -> str:
        """The field holding the source row number, shared across the three tables."""
        return "index" if self is Table.PIN else "ind"

    @property
    def fields(self) -> tuple[str, ...]:
        """Raw field names in the source database's column order."""
        return RAW_FIELDS[self]


RAW_FIELDS: dict[Table, tuple[str, ...]] = {
    Table.PIN: (
        "index",
        "unique_id",
        "title",
        "description",
        "poster_name",
        "follower_count",
        "tag_list",
        "is_image_or_video",
        "image_src",
        "downloaded",
        "save_location",
        "category",
    ),
    Table.GEO: ("ind", "timestamp", "latitude", "longitude", "country"),
    Table.USER: ("ind", "first_name", "last_name", "age", "date_joined"),
}

DATETIME_FIELDS: dict[Table, tuple[str, ...]] = {
    Table.PIN: (),
    Table.GEO: ("timestamp",),
    Table.USER: ("date_joined",),
}

DLQ_SUFFIX = "dlq"


def topic_name(prefix: str, table: Table | str) -> str:
    """``<prefix>.<table>``; ``table`` may be ``"dlq"`` for the dead-letter topic."""
    suffix = table.value if isinstance(table, Table) else table
    return f"{prefix}.{suffix}"


def all_topics(prefix: str) -> list[str]:
    """The three table topics and the dead-letter topic."""
    return [topic_name(prefix, table) for table in Table] + [topic_name(prefix, DLQ_SUFFIX)]


def parse_datetime(value: str | datetime) -> datetime:
    """Accept every datetime serialisation seen on the wire; no zone means UTC.

    ``2020-08-28T03:52:47``, ``2020-08-28 03:52:47``, with fractional seconds and/or a zone
    suffix (``Z``, ``+02:00``). Returns an aware datetime in UTC.
    """
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


class DatetimeStyle(str, enum.Enum):
    """How a client serialises datetimes (DATA_SPEC.md section 1, 'Datetimes on the wire')."""

    ISO = "iso"  # 2020-08-28T03:52:47
    SPACE = "space"  # 2020-08-28 03:52:47
    ZONED = "zoned"  # 2020-08-28T03:52:47.000000+00:00

    def format(self, value: datetime) -> str:
        """Serialise a naive-UTC or aware datetime in this style."""
        utc = parse_datetime(value).replace(tzinfo=None)
        if self is DatetimeStyle.ISO:
            return utc.isoformat(timespec="seconds")
        if self is DatetimeStyle.SPACE:
            return utc.isoformat(sep=" ", timespec="seconds")
        return utc.isoformat(timespec="microseconds") + "+00:00"


def format_utc(value: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix: the one datetime form pinpipe stores in Kafka."""
    utc = parse_datetime(value).replace(tzinfo=None)
    timespec = "microseconds" if utc.microsecond else "seconds"
    return utc.isoformat(timespec=timespec) + "Z"


def record_key(table: Table, record: dict) -> bytes | None:
    """The Kafka key of a record: its natural key as UTF-8 text (None when absent)."""
    value = record.get(table.natural_key)
    return None if value is None else str(value).encode()
