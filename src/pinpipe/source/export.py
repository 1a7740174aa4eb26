"""The source tables as files: JSON lines or Parquet, one file per table."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pinpipe.events import RAW_FIELDS, Table
from pinpipe.source.tables import SourceTables, raw_type

FORMATS = ("jsonl", "parquet")

# Arrow type of each raw Python type. Datetimes stay naive (UTC by convention).
ARROW_TYPES: dict[type, pa.DataType] = {
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    datetime: pa.timestamp("us"),
}


def export_tables(tables: SourceTables, out_dir: Path, fmt: str = "jsonl") -> list[Path]:
    """Write ``<out_dir>/<table>.<fmt>`` for pin, geo and user; return the paths in that order.

    JSON lines hold one row object per line, keys in column order, UTF-8, datetimes as
    ISO-8601 without a zone (``2020-08-28T03:52:47``).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for table in Table:
        path = out_dir / f"{table.value}.{fmt}"
        if fmt == "jsonl":
            _write_jsonl(tables.rows(table), path)
        else:
            pq.write_table(
                pa.Table.from_pylist(tables.rows(table), schema=arrow_schema(table)), path
            )
        paths.append(path)
    return paths


def arrow_schema(table: Table) -> pa.Schema:
    """The Arrow schema of a raw source table."""
    return pa.schema([(field, ARROW_TYPES[raw_type(field)]) for field in RAW_FIELDS[table]])


def _write_jsonl(rows: list[dict], path: Path) -> None:
    with path.open("wb") as file:
        for row in rows:
            file.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
