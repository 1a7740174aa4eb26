"""*How* raw records are encoded: one Arrow table per file, written as zstd Parquet.

Columns (DATA_SPEC.md section 5): ``value`` (string), ``key`` (string), ``topic``,
``partition`` (int32), ``offset`` (int64), ``timestamp`` (broker time, timestamp[ms, UTC]),
``written_at`` (timestamp[us, UTC]), plus ``value_bytes`` (binary).

Raw is raw: ``value`` holds the record's bytes decoded as UTF-8, which is exactly what they
were for every record the ingest API produces (JSON). A value that is *not* valid UTF-8 (a
foreign producer) cannot live in a string column without changing it, so for those records
``value`` is null and ``value_bytes`` holds the exact bytes; ``value_bytes`` is null for every
other record, costing a few bytes per file. Keys are text in pinpipe; a key that is not valid
UTF-8 is decoded with U+FFFD replacement characters (the key is a copy of a field inside the
value, so nothing is lost). A null value (tombstone) stays null in both columns.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema(
    [
        pa.field("value", pa.string()),
        pa.field("key", pa.string()),
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("timestamp", pa.timestamp("ms", tz="UTC")),
        pa.field("written_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("value_bytes", pa.binary()),
    ]
)


def _text(items: list[bytes | None], keep_invalid: bool) -> tuple[pa.Array, pa.Array | None]:
    """(string column, binary column of the invalid items or None if all were valid)."""
    binary = pa.array(items, type=pa.binary())
    try:
        return binary.cast(pa.string()), None
    except pa.ArrowInvalid:
        pass
    texts: list[str | None] = []
    raw: list[bytes | None] = []
    for item in items:
        if item is None:
            texts.append(None)
            raw.append(None)
            continue
        try:
            texts.append(item.decode("utf-8"))
            raw.append(None)
        except UnicodeDecodeError:
            texts.append(None if keep_invalid else item.decode("utf-8", errors="replace"))
            raw.append(item)
    return pa.array(texts, type=pa.string()), pa.array(raw, type=pa.binary())


def encode_records(
    topic: str,
    partition: int,
    values: list[bytes | None],
    keys: list[bytes | None],
    offsets: list[int],
    timestamps: list[int | None],
    written_at: datetime | None = None,
) -> pa.Table:
    """The Arrow table of one file's records (all from one topic-partition)."""
    rows = len(offsets)
    written = written_at or datetime.now(timezone.utc)
    value_text, value_bytes = _text(values, keep_invalid=True)
    key_text, _ = _text(keys, keep_invalid=False)
    columns = [
        value_text,
        key_text,
        pa.repeat(pa.scalar(topic, pa.string()), rows),
        pa.repeat(pa.scalar(partition, pa.int32()), rows),
        pa.array(offsets, type=pa.int64()),
        pa.array(timestamps, type=pa.timestamp("ms", tz="UTC")),
        pa.repeat(pa.scalar(written, pa.timestamp("us", tz="UTC")), rows),
        value_bytes if value_bytes is not None else pa.nulls(rows, pa.binary()),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def to_parquet_bytes(table: pa.Table) -> pa.Buffer:
    """The whole Parquet file in memory (one row group), zstd-compressed (bytes-like, no copy)."""
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        use_dictionary=["topic", "key"],
        row_group_size=max(table.num_rows, 1),
        write_statistics=["offset", "timestamp"],
    )
    return sink.getvalue()
