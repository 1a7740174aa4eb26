"""Round trips through a real PostgreSQL (the session fixture ``pg_dsn``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from pinpipe.events import Table
from pinpipe.source.database import SOURCE_TABLE_NAMES, load_tables, read_tables
from pinpipe.source.generator import generate_tables
from pinpipe.source.tables import SourceTables

pytestmark = pytest.mark.integration

ROWS = 300


@pytest.fixture(scope="module")
def tables() -> SourceTables:
    return generate_tables(seed=11, rows=ROWS)


@pytest.fixture
def schema(pg_dsn: str) -> Iterator[str]:
    """A schema of this test's own, dropped afterwards."""
    name = f"source_test_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def test_load_then_read_back_equal(tables: SourceTables, pg_dsn: str, schema: str) -> None:
    counts = load_tables(tables, pg_dsn, schema=schema)
    assert counts == {Table.PIN: ROWS, Table.GEO: ROWS, Table.USER: ROWS}
    assert read_tables(pg_dsn, schema=schema) == tables


def test_reload_replaces(tables: SourceTables, pg_dsn: str, schema: str) -> None:
    load_tables(tables, pg_dsn, schema=schema)
    smaller = generate_tables(seed=12, rows=40)
    assert load_tables(smaller, pg_dsn, schema=schema) == {table: 40 for table in Table}
    assert read_tables(pg_dsn, schema=schema) == smaller


def test_original_names_and_column_types(tables: SourceTables, pg_dsn: str, schema: str) -> None:
    load_tables(tables, pg_dsn, schema=schema)
    with psycopg.connect(pg_dsn) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = %s",
            [schema],
        ).fetchall()
    types = {(table, column): data_type for table, column, data_type in columns}
    assert {table for table, _ in types} == {"pinterest_data", "geolocation_data", "user_data"}
    assert types["pinterest_data", "index"] == "integer"
    assert types["pinterest_data", "follower_count"] == "text"
    assert types["pinterest_data", "downloaded"] == "integer"
    assert types["geolocation_data", "timestamp"] == "timestamp without time zone"
    assert types["geolocation_data", "latitude"] == "double precision"
    assert types["user_data", "age"] == "integer"
    assert types["user_data", "date_joined"] == "timestamp without time zone"
    assert SOURCE_TABLE_NAMES[Table.USER] == "user_data"


def test_non_ascii_text_survives(pg_dsn: str, schema: str) -> None:
    source = generate_tables(rows=5)
    titles = ["Новогодний декор …", "クリスマス 🎄 ✨", "a\u00a0b", "  padded\t", ""]
    pins = [dict(row, title=title) for row, title in zip(source.pin, titles)]
    pins[2]["image_src"] = None
    odd = SourceTables(pin=pins, geo=source.geo, user=source.user)
    load_tables(odd, pg_dsn, schema=schema)
    back = read_tables(pg_dsn, schema=schema)
    assert [row["title"] for row in back.pin] == titles
    assert back.pin[2]["image_src"] is None
    assert back == odd


def test_rows_come_back_ordered_by_row_number(pg_dsn: str, schema: str) -> None:
    source = generate_tables(rows=30)
    shuffled = SourceTables(pin=source.pin[::-1], geo=source.geo[::-1], user=source.user[::-1])
    load_tables(shuffled, pg_dsn, schema=schema)
    assert read_tables(pg_dsn, schema=schema) == source
