"""`pinpipe source load` into the embedded PostgreSQL, then the emulator reading its rows from there."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from typer.testing import CliRunner

from pinpipe.cli import app
from tests.source.httpserver import RecordingServer

pytestmark = pytest.mark.integration


@pytest.fixture
def source_db(pg_dsn: str) -> Iterator[str]:
    """A database of this test's own on the shared PostgreSQL (the original's RDS source)."""
    name = f"source_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(pg_dsn)
    params["dbname"] = name
    yield make_conninfo(**params)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_load_then_emulate_from_the_database(source_db: str, monkeypatch):
    for name in [n for n in __import__("os").environ if n.startswith("PINPIPE_")]:
        monkeypatch.delenv(name)
    runner = CliRunner()
    loaded = runner.invoke(app, ["source", "load", "--dsn", source_db, "--rows", "25", "--seed", "5"])
    assert loaded.exit_code == 0, loaded.output
    assert "pinterest_data: 25 rows" in loaded.output and "user_data: 25 rows" in loaded.output

    # Change one row in the database: the emulator must post what the database holds.
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute("UPDATE pinterest_data SET title = 'edited in SQL'")
        rows = {row[0]: row for row in conn.execute('SELECT "index", unique_id, title FROM pinterest_data')}
        users = {row[0]: row[1:] for row in conn.execute("SELECT ind, first_name, date_joined FROM user_data")}

    with RecordingServer() as server:
        result = runner.invoke(app, [
            "emulate", "--source-dsn", source_db, "--base-url", server.base_url, "--format", "legacy",
            "--count", "12", "--rate", "500", "--datetime-style", "space",
        ])
        assert result.exit_code == 0, result.output
    assert "12" in result.output  # the summary's posts column
    pins = [json.loads(r.body) for r in server.received if r.path == "/pin/"]
    user_bodies = [json.loads(r.body) for r in server.received if r.path == "/user/"]
    assert len(pins) == 12 and len(user_bodies) == 12
    for pin in pins:
        index, unique_id, title = rows[pin["index"]]
        assert (pin["unique_id"], pin["title"]) == (unique_id, "edited in SQL")
    for user in user_bodies:
        first_name, date_joined = users[user["ind"]]
        assert user["first_name"] == first_name
        assert user["date_joined"] == date_joined.strftime("%Y-%m-%d %H:%M:%S")
