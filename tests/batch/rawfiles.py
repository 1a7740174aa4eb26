"""Write raw lake files the way the lake sink lays them out (DATA_SPEC.md section 5).

``raw/<table>/dt=<day>/<topic>+<partition>+<first offset, 20 digits>.parquet`` with columns
value, key, topic, partition, offset, timestamp (broker time, UTC), written_at.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pinpipe.events import Table, format_utc

TOPIC_PREFIX = "test"
DEFAULT_DAY = "2024-03-01"

RAW_SCHEMA = pa.schema(
    [
        ("value", pa.string()),
        ("key", pa.string()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("written_at", pa.timestamp("us", tz="UTC")),
    ]
)


def encode_value(record: dict[str, Any] | str | None) -> str | None:
    """A record as the Kafka value text: compact JSON, datetimes as ISO UTC ``...Z``.

    A string is taken as the value text itself (for malformed values); None is a tombstone.
    """
    if record is None or isinstance(record, str):
        return record
    values = {k: format_utc(v) if isinstance(v, datetime) else v for k, v in record.items()}
    return orjson.dumps(values).decode()


def write_raw(
    lake: Path,
    table: Table | str,
    records: list[dict[str, Any] | str | None],
    *,
    day: str = DEFAULT_DAY,
    partition: int = 0,
    first_offset: int = 0,
    timestamps: list[datetime] | None = None,
) -> Path:
    """One raw file holding ``records`` at consecutive offsets; returns its path.

    Broker timestamps default to ``day`` 00:00 UTC plus one second per offset.
    """
    table = Table(table)
    topic = f"{TOPIC_PREFIX}.{table.value}"
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    offsets = [first_offset + n for n in range(len(records))]
    if timestamps is None:
        timestamps = [start + timedelta(seconds=offset) for offset in offsets]
    key_field = table.natural_key
    columns = {
        "value": [encode_value(r) for r in records],
        "key": [
            str(r[key_field]) if isinstance(r, dict) and key_field in r else None for r in records
        ],
        "topic": [topic] * len(records),
        "partition": [partition] * len(records),
        "offset": offsets,
        "timestamp": timestamps,
        "written_at": [datetime.now(UTC)] * len(records),
    }
    directory = lake / "raw" / table.value / f"dt={day}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{topic}+{partition}+{first_offset:020d}.parquet"
    pq.write_table(pa.table(columns, schema=RAW_SCHEMA), path, compression="zstd")
    return path
