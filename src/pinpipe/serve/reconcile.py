"""Do the two layers agree? The batch layer's clean tables against the speed layer's rows.

Both layers clean with the same rules (:mod:`pinpipe.cleaning`) and keep the last arrival of
each natural key, so once the stream has caught up and the batch job has run over the same
records, ``<lake>/clean/<table>`` (one row per key, latest ``dt``: the views of
:mod:`pinpipe.lakesql`) and PostgreSQL's ``pinpipe.<table>`` must hold the same rows, value
for value. :func:`compare_layers` says how far they do; ``pinpipe demo`` checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pinpipe.config import Settings
from pinpipe.events import CLEAN_COLUMNS, Table

EXAMPLES = 3


@dataclass(frozen=True)
class LayerComparison:
    """One table in both layers: row counts, how many keys hold equal rows, a few that do not."""

    table: Table
    batch_rows: int
    speed_rows: int
    equal_rows: int
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.batch_rows == self.speed_rows == self.equal_rows


def _normalise(value: Any) -> Any:
    # DuckDB and psycopg both give aware datetimes, in their own zone objects.
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return value


def _keyed(rows: list[tuple], columns: tuple[str, ...], key: str) -> dict[Any, tuple]:
    at = columns.index(key)
    return {row[at]: tuple(_normalise(v) for v in row) for row in rows}


def _describe(key: str, value: Any, columns: tuple[str, ...], batch: tuple | None,
              speed: tuple | None) -> str:
    if batch is None:
        return f"{key} {value!r}: only in PostgreSQL"
    if speed is None:
        return f"{key} {value!r}: only in the lake"
    differing = [
        f"{c}: lake {b!r} / PostgreSQL {s!r}" for c, b, s in zip(columns, batch, speed) if b != s
    ]
    return f"{key} {value!r}: " + "; ".join(differing)


def compare_table(
    table: Table, batch_rows: list[tuple], speed_rows: list[tuple]
) -> LayerComparison:
    """Compare rows of ``CLEAN_COLUMNS[table]`` (in that order) from each layer, by natural key."""
    columns, key = CLEAN_COLUMNS[table], table.natural_key
    batch, speed = _keyed(batch_rows, columns, key), _keyed(speed_rows, columns, key)
    equal = sum(1 for k, row in batch.items() if speed.get(k) == row)
    keys = batch.keys() | speed.keys()
    differing = sorted(k for k in keys if batch.get(k) != speed.get(k))
    examples = [
        _describe(key, k, columns, batch.get(k), speed.get(k)) for k in differing[:EXAMPLES]
    ]
    return LayerComparison(table, len(batch), len(speed), equal, examples)


def compare_layers(settings: Settings, dsn: str) -> list[LayerComparison]:
    """Every table of the lake's clean layer against the speed layer's table in PostgreSQL.

    Needs the ``sql`` extra (DuckDB) and a local lake, as ``pinpipe sql`` does.
    """
    import psycopg

    from pinpipe.lakesql import connect
    from pinpipe.serve.schema import SPEED_TABLES

    lake = connect(settings)
    try:
        views = lake.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        present = {name for (name,) in views}
        with psycopg.connect(dsn) as conn:
            comparisons = []
            for table, columns in CLEAN_COLUMNS.items():
                select = ", ".join(f'"{c}"' for c in columns)
                batch = []  # a table the batch job has not written yet has no view: no rows
                if table.value in present:
                    batch = lake.execute(f'SELECT {select} FROM "{table.value}"').fetchall()
                speed = conn.execute(f"SELECT {select} FROM {SPEED_TABLES[table]}").fetchall()
                comparisons.append(compare_table(table, batch, speed))
            return comparisons
    finally:
        lake.close()
