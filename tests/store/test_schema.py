"""The pinpipe PostgreSQL schema: versioned migrations, idempotent, a read-only role."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pinpipe.store.schema import MigrationError, apply_migrations, migrations, schema_version

pytestmark = pytest.mark.integration


def columns(dsn: str, table: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'pinpipe' AND table_name = %s ORDER BY ordinal_position",
            (table,),
        ).fetchall()


def test_migrations_apply_once_in_order(fresh_dsn):
    versions = [m.version for m in migrations()]
    assert versions == sorted(versions) and versions[0] == 1
    assert schema_version(fresh_dsn) == 0
    assert apply_migrations(fresh_dsn) == versions
    assert apply_migrations(fresh_dsn) == []
    assert schema_version(fresh_dsn) == versions[-1]


def test_speed_tables_have_the_clean_columns(fresh_dsn):
    apply_migrations(fresh_dsn)
    assert columns(fresh_dsn, "geo")[:4] == [
        ("ind", "integer"), ("country", "text"), ("coordinates", "ARRAY"),
        ("timestamp", "timestamp with time zone"),
    ]
    assert columns(fresh_dsn, "user")[:4] == [
        ("ind", "integer"), ("user_name", "text"), ("age", "integer"),
        ("date_joined", "timestamp with time zone"),
    ]
    assert [name for name, _ in columns(fresh_dsn, "pin")[:12]] == [
        "ind", "unique_id", "title", "description", "follower_count", "poster_name", "tag_list",
        "is_image_or_video", "image_src", "save_location", "category", "downloaded",
    ]
    assert dict(columns(fresh_dsn, "pin"))["follower_count"] == "bigint"
    assert columns(fresh_dsn, "median_followers_by_join_year_and_age_group") == [
        ("age_group", "text"), ("post_year", "integer"), ("median_follower_count", "double precision"),
    ]


def test_a_changed_migration_is_refused(fresh_dsn):
    apply_migrations(fresh_dsn)
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        conn.execute("UPDATE pinpipe.schema_migrations SET checksum = 'x' WHERE version = 1")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        apply_migrations(fresh_dsn)


def test_readonly_role_reads_but_cannot_write(fresh_dsn):
    apply_migrations(fresh_dsn)
    login = f"dash_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {login} LOGIN PASSWORD 'pw' IN ROLE pinpipe_readonly")
        conn.execute("CREATE TABLE IF NOT EXISTS pinpipe.later (x int)")  # default privileges
    params = conninfo_to_dict(fresh_dsn)
    dash = make_conninfo(fresh_dsn, user=login, password="pw")
    try:
        with psycopg.connect(dash) as conn:
            assert conn.execute('SELECT count(*) FROM pinpipe."user"').fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM pinpipe.later").fetchone() == (0,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("INSERT INTO pinpipe.geo (ind, kafka_partition, kafka_offset) VALUES (1, 0, 0)")
    finally:
        with psycopg.connect(fresh_dsn, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {login}")
            conn.execute(f"DROP ROLE {login}")
    del params
