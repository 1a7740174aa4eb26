"""Do the two layers agree? The batch layer's clean tables against the speed layer's rows.

Both layers clean with the same rules (:mod:`pinpipe.cleaning`) and keep the last arrival of
each natural key, so once the stream has caught up and the batch job has run over the same
records, ``<lake>/clean/<table>`` (one row per key, latest ``dt``: the views of
:mod:`pinpipe.lakesql`) and PostgreSQL's ``pinpipe.<table>`` must hold the same rows, value
for value. :func:`compare_layers` says how far they do; ``pinpipe demo`` checks it.

The stream job's Delta tables (``<lake>/stream/<table>``, every arrival) must agree too: their
latest row per key, by broker timestamp, then offset, then partition (the order of the speed
layer's upserts), is the PostgreSQL row of that key (:func:`compare_stream_tables`).
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
    lake: str = "lake"
    """What ``batch_rows`` came from: ``lake`` (the clean tables) or ``Delta table`` (the stream's)."""

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
              speed: tuple | None, lake: str) -> str:
    if batch is None:
        return f"{key} {value!r}: only in PostgreSQL"
    if speed is None:
        return f"{key} {value!r}: only in the {lake}"
    differing = [
        f"{c}: {lake} {b!r} / PostgreSQL {s!r}" for c, b, s in zip(columns, batch, speed) if b != s
    ]
    return f"{key} {value!r}: " + "; ".join(differing)


def compare_table(
    table: Table, batch_rows: list[tuple], speed_rows: list[tuple], lake: str = "lake"
) -> LayerComparison:
    """Compare rows of ``CLEAN_COLUMNS[table]`` (in that order) from each layer, by natural key.

    ``lake`` names where ``batch_rows`` came from, in the differences.
    """
    columns, key = CLEAN_COLUMNS[table], table.natural_key
    batch, speed = _keyed(batch_rows, columns, key), _keyed(speed_rows, columns, key)
    equal = sum(1 for k, row in batch.items() if speed.get(k) == row)
    keys = batch.keys() | speed.keys()
    differing = sorted(k for k in keys if batch.get(k) != speed.get(k))
    examples = [
        _describe(key, k, columns, batch.get(k), speed.get(k), lake) for k in differing[:EXAMPLES]
    ]
    return LayerComparison(table, len(batch), len(speed), equal, examples, lake)


def compare_layers(settings: Settings, dsn: str) -> list[LayerComparison]:
    """Every table of the lake's clean layer against the speed layer's table in PostgreSQL.

    Needs the ``sql`` extra (DuckDB) and a local lake, as ``pinpipe sql`` does.
    """
    return _compare(settings, dsn, "lake", lambda table, select: f'SELECT {select} FROM "{table.value}"')


def compare_stream_tables(settings: Settings, dsn: str) -> list[LayerComparison]:
    """The latest row per key of each stream Delta table against the speed layer's table.

    Needs DuckDB and ``deltalake``, and a local lake, as ``pinpipe sql`` does.
    """
    from pinpipe.lakesql import STREAM_VIEWS

    def latest(table: Table, select: str) -> str:
        return (
            f"SELECT {select} FROM {STREAM_VIEWS[table]} QUALIFY row_number() OVER ("
            f'PARTITION BY "{table.natural_key}" ORDER BY broker_timestamp DESC NULLS LAST, '
            "kafka_offset DESC, kafka_partition DESC) = 1"
        )

    return _compare(settings, dsn, "Delta table", latest, views=STREAM_VIEWS)


def _compare(settings: Settings, dsn: str, lake_name: str, query, views: dict[Table, str] | None = None
             ) -> list[LayerComparison]:
    """Each table's rows from ``query(table, select list)`` over the lake's DuckDB views (none
    when its view, ``views[table]`` or the table's name, does not exist) against PostgreSQL's."""
    import psycopg

    from pinpipe.lakesql import connect
    from pinpipe.store.schema import SPEED_TABLES

    lake = connect(settings)
    try:
        found = lake.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        present = {name for (name,) in found}
        with psycopg.connect(dsn) as conn:
            comparisons = []
            for table, columns in CLEAN_COLUMNS.items():
                select = ", ".join(f'"{c}"' for c in columns)
                batch = []  # a table not written yet has no view: no rows
                if (views or {}).get(table, table.value) in present:
                    batch = lake.execute(query(table, select)).fetchall()
                speed = conn.execute(f"SELECT {select} FROM {SPEED_TABLES[table]}").fetchall()
                comparisons.append(compare_table(table, batch, speed, lake_name))
            return comparisons
    finally:
        lake.close()
