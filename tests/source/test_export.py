from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pinpipe.events import Table
from pinpipe.source.export import export_tables
from pinpipe.source.generator import generate_tables
from pinpipe.source.tables import SourceTables

ROWS = 200


@pytest.fixture(scope="module")
def tables() -> SourceTables:
    return generate_tables(seed=3, rows=ROWS)


def test_jsonl_one_file_per_table_one_line_per_row(tables: SourceTables, tmp_path: Path) -> None:
    paths = export_tables(tables, tmp_path, "jsonl")
    assert paths == [tmp_path / "pin.jsonl", tmp_path / "geo.jsonl", tmp_path / "user.jsonl"]
    for path in paths:
        assert len(path.read_text(encoding="utf-8").splitlines()) == ROWS


def test_jsonl_row_parses_back_to_the_source_row(tables: SourceTables, tmp_path: Path) -> None:
    export_tables(tables, tmp_path)
    lines = {
        table: (tmp_path / f"{table.value}.jsonl").read_text("utf-8").splitlines()
        for table in Table
    }
    assert json.loads(lines[Table.PIN][10]) == tables.pin[10]
    geo = json.loads(lines[Table.GEO][10])
    assert geo["timestamp"] == tables.geo[10]["timestamp"].isoformat()
    assert datetime.fromisoformat(geo["timestamp"]) == tables.geo[10]["timestamp"]
    assert list(geo) == ["ind", "timestamp", "latitude", "longitude", "country"]


def test_jsonl_datetime_is_iso_8601(tmp_path: Path) -> None:
    row = {"ind": 1, "timestamp": datetime(2020, 8, 28, 3, 52, 47), "latitude": -1.5,
           "longitude": 2.25, "country": "Cote d'Ivoire"}  # fmt: skip
    user = {"ind": 1, "first_name": "Ана", "last_name": "Li", "age": 30,
            "date_joined": datetime(2015, 1, 2, 3, 4, 5)}  # fmt: skip
    pin = dict(generate_tables(rows=1).pin[0], index=1)
    export_tables(SourceTables(pin=[pin], geo=[row], user=[user]), tmp_path)
    assert (tmp_path / "geo.jsonl").read_text("utf-8") == (
        '{"ind":1,"timestamp":"2020-08-28T03:52:47","latitude":-1.5,"longitude":2.25,'
        '"country":"Cote d\'Ivoire"}\n'
    )
    assert '"first_name":"Ана"' in (tmp_path / "user.jsonl").read_text("utf-8")


def test_parquet_reads_back_equal(tables: SourceTables, tmp_path: Path) -> None:
    paths = export_tables(tables, tmp_path / "nested", fmt="parquet")
    assert [path.name for path in paths] == ["pin.parquet", "geo.parquet", "user.parquet"]
    for table, path in zip(Table, paths):
        assert pq.read_table(path).to_pylist() == tables.rows(table)


def test_parquet_types(tables: SourceTables, tmp_path: Path) -> None:
    export_tables(tables, tmp_path, fmt="parquet")
    pin = pq.read_schema(tmp_path / "pin.parquet")
    assert str(pin.field("follower_count").type) == "string"
    assert str(pin.field("index").type) == "int64"
    geo = pq.read_schema(tmp_path / "geo.parquet")
    assert str(geo.field("timestamp").type) == "timestamp[us]"
    assert str(geo.field("latitude").type) == "double"


def test_unknown_format_is_refused(tables: SourceTables, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="csv"):
        export_tables(tables, tmp_path, fmt="csv")
