"""The two layers compared: the lake's clean tables (DuckDB) against PostgreSQL's speed tables."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pinpipe.config import Settings
from pinpipe.events import Table
from pinpipe.serve.reconcile import compare_layers, compare_table
from pinpipe.store.schema import apply_migrations

UTC = timezone.utc
JOINED = datetime(2016, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_equal_rows_in_any_order_and_zone_agree():
    paris = timezone(timedelta(hours=1))
    batch = [(1, "Ada Lovelace", 36, JOINED), (2, "Grace Hopper", 52, JOINED)]
    speed = [(2, "Grace Hopper", 52, JOINED.astimezone(paris)), (1, "Ada Lovelace", 36, JOINED)]
    comparison = compare_table(Table.USER, batch, speed)
    assert (comparison.ok, comparison.equal_rows, comparison.differences) == (True, 2, [])


def test_a_differing_value_and_a_missing_key_are_named():
    batch = [(1, "Ada Lovelace", 36, JOINED), (2, "Grace Hopper", 52, JOINED)]
    speed = [(1, "Ada Lovelace", 37, JOINED)]
    comparison = compare_table(Table.USER, batch, speed)
    assert not comparison.ok
    assert (comparison.batch_rows, comparison.speed_rows, comparison.equal_rows) == (2, 1, 0)
    assert comparison.differences == [
        "ind 1: age: lake 36 / PostgreSQL 37",
        "ind 2: only in the lake",
    ]


GEO_SCHEMA = pa.schema([("ind", pa.int32()), ("country", pa.string()),
                        ("coordinates", pa.list_(pa.float64())), ("timestamp", pa.timestamp("us", tz="UTC"))])


def write_clean(lake, table: str, dt: str, rows: list[dict], schema: pa.Schema) -> None:
    folder = lake / "clean" / table / f"dt={dt}"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema), folder / "part-0.parquet")


@pytest.mark.integration
def test_compare_layers_reads_the_latest_dt_of_the_lake_and_postgres(tmp_path, fresh_dsn):
    at = datetime(2020, 8, 28, 3, 52, 47, tzinfo=UTC)
    write_clean(tmp_path / "lake", "geo", "2026-11-30", [
        {"ind": 1, "country": "Old name", "coordinates": [-5.5, 12.25], "timestamp": at},
        {"ind": 2, "country": "Cote d'Ivoire", "coordinates": [1.0, 2.0], "timestamp": at},
    ], GEO_SCHEMA)
    write_clean(tmp_path / "lake", "geo", "2026-12-01", [
        {"ind": 1, "country": "Antarctica (the territory South of 60 deg S)", "coordinates": [-5.5, 12.25],
         "timestamp": at},
    ], GEO_SCHEMA)
    apply_migrations(fresh_dsn)
    with psycopg.connect(fresh_dsn) as conn:
        for ind, country, coordinates in (
            (1, "Antarctica (the territory South of 60 deg S)", [-5.5, 12.25]),
            (2, "Cote d'Ivoire", [1.0, 2.5]),
            (3, "France", [0.0, 0.0]),
        ):
            conn.execute(
                "INSERT INTO pinpipe.geo (ind, country, coordinates, timestamp, kafka_partition, kafka_offset)"
                " VALUES (%s, %s, %s, %s, 0, %s)", (ind, country, coordinates, at, ind),
            )
    settings = Settings(data_dir=tmp_path, lake={"root": str(tmp_path / "lake")})

    by_table = {c.table: c for c in compare_layers(settings, fresh_dsn)}

    geo = by_table[Table.GEO]
    assert (geo.batch_rows, geo.speed_rows, geo.equal_rows) == (2, 3, 1)
    assert geo.differences == [
        "ind 2: coordinates: lake [1.0, 2.0] / PostgreSQL [1.0, 2.5]",
        "ind 3: only in PostgreSQL",
    ]
    # Not in the lake yet, nothing in PostgreSQL either: the layers agree on nothing.
    assert by_table[Table.PIN].ok and by_table[Table.PIN].batch_rows == 0
