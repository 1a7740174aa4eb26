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

from array import array
from datetime import datetime, timedelta, timezone
from itertools import accumulate

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
# Offsets of a binary/string array are int32: split a column that holds more (pa.array would).
_MAX_CHUNK_BYTES = 2**31 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)

# The columns are built from buffers, not with pa.array()/pa.scalar(): those import pandas on
# first use when it is installed (the spark extra), which cost the sink ~55 MB of RSS and a
# second of CPU, and converting a list of bytes that way was no faster.


def _validity(items: list) -> pa.Buffer:
    """Arrow validity bitmap of ``items`` (bit set = not None)."""
    flags = bytes(item is not None for item in items)
    return pa.Array.from_buffers(pa.uint8(), len(items), [None, pa.py_buffer(flags)]).cast(
        pa.bool_()
    ).buffers()[1]


def _binary(items: list[bytes | None]) -> pa.Array | pa.ChunkedArray:
    """A binary array of ``items`` (None = null): their bytes joined, plus int32 offsets."""
    try:
        data = b"".join(items)
        validity = None
        sizes = map(len, items)
    except TypeError:  # nulls (tombstones, records without key)
        data = b"".join(item for item in items if item is not None)
        validity = _validity(items)
        sizes = (len(item) if item is not None else 0 for item in items)
    if len(data) > _MAX_CHUNK_BYTES and len(items) > 1:
        half = len(items) // 2
        parts = [_binary(items[:half]), _binary(items[half:])]
        chunks = [c for part in parts for c in getattr(part, "chunks", [part])]
        return pa.chunked_array(chunks, pa.binary())
    offsets = array("i", accumulate(sizes, initial=0))
    return pa.Array.from_buffers(pa.binary(), len(items),
                                 [validity, pa.py_buffer(offsets), pa.py_buffer(data)])  # fmt: skip


def _int64(type_: pa.DataType, items: list[int | None]) -> pa.Array:
    """An int64-backed array (int64, timestamp) of ``items`` (None = null)."""
    try:
        return pa.Array.from_buffers(type_, len(items), [None, pa.py_buffer(array("q", items))])
    except TypeError:  # nulls (records without a broker timestamp)
        values = array("q", (item if item is not None else 0 for item in items))
        return pa.Array.from_buffers(type_, len(items), [_validity(items), pa.py_buffer(values)])


def _constant(type_: pa.DataType, value: bytes | int, rows: int) -> pa.Array:
    """``rows`` copies of one value (a string's UTF-8 bytes, or an integer)."""
    if isinstance(value, bytes):
        single = pa.Array.from_buffers(type_, 1, [None, pa.py_buffer(array("i", [0, len(value)])),
                                                  pa.py_buffer(value)])  # fmt: skip
    else:
        code = "i" if type_.bit_width == 32 else "q"
        single = pa.Array.from_buffers(type_, 1, [None, pa.py_buffer(array(code, [value]))])
    return pa.repeat(single[0], rows)


def _valid_utf8(item: bytes) -> bool:
    try:
        item.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _text(items: list[bytes | None], keep_invalid: bool) -> tuple[pa.Array, pa.Array | None]:
    """(string column, binary column of the invalid items or None if all were valid)."""
    binary = _binary(items)
    try:
        return binary.cast(pa.string()), None
    except pa.ArrowInvalid:
        pass
    # Some item is not UTF-8 (a foreign producer): rare, so item by item.
    valid = [item is None or _valid_utf8(item) for item in items]
    if keep_invalid:
        texts = [item if ok else None for item, ok in zip(items, valid, strict=True)]
        raw = [None if ok else item for item, ok in zip(items, valid, strict=True)]
        return _binary(texts).cast(pa.string()), _binary(raw)
    texts = [item if ok else item.decode("utf-8", errors="replace").encode()
             for item, ok in zip(items, valid, strict=True)]  # fmt: skip
    return _binary(texts).cast(pa.string()), None


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
    written_us = (written - _EPOCH) // _MICROSECOND
    value_text, value_bytes = _text(values, keep_invalid=True)
    key_text, _ = _text(keys, keep_invalid=False)
    columns = [
        value_text,
        key_text,
        _constant(pa.string(), topic.encode(), rows),
        _constant(pa.int32(), partition, rows),
        _int64(pa.int64(), offsets),
        _int64(pa.timestamp("ms", tz="UTC"), timestamps),
        _constant(pa.timestamp("us", tz="UTC"), written_us, rows),
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
        use_dictionary=["topic"],  # keys are near-unique: a dictionary made files bigger
        row_group_size=max(table.num_rows, 1),
        write_statistics=["offset", "timestamp"],
    )
    return sink.getvalue()
