"""Least privilege: readers (the dashboard) log in as a role that can only SELECT.

The dashboard's sessions are read-only by default, but a session setting is no protection:
``SET default_transaction_read_only = off`` undoes it. The reader login has no right to write.
"""

import psycopg
import pytest

from pinpipe.config import load_settings
from pinpipe.services import resolve

pytestmark = pytest.mark.integration


def test_the_reader_login_cannot_write_whatever_it_sets(traversable_dir):
    settings = load_settings(data_dir=traversable_dir / "data")
    with resolve.postgres_dsn(settings) as dsn:
        reader = resolve.reader_dsn(settings, dsn)
        assert reader is not None and reader != dsn
        with psycopg.connect(dsn) as conn:  # the writer: one speed-layer row
            conn.execute("INSERT INTO pinpipe.dead_letter (topic, kafka_partition, kafka_offset, reason, value)"
                         " VALUES ('t', 0, 7, 'bad', 'x')")
        password = reader.split(":")[2].split("@")[0]
        assert password not in dsn

        with psycopg.connect(reader, autocommit=True) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("pinpipe_reader",)
            assert conn.execute("SELECT kafka_offset FROM pinpipe.dead_letter").fetchall() == [(7,)]
            conn.execute("SET default_transaction_read_only = off")
            for statement in (
                "DELETE FROM pinpipe.dead_letter",
                "UPDATE pinpipe.dead_letter SET reason = 'changed'",
                "INSERT INTO pinpipe.dead_letter (topic, kafka_partition, kafka_offset, reason, value)"
                " VALUES ('t', 0, 8, 'r', 'v')",
                "TRUNCATE pinpipe.dead_letter",
                "CREATE TABLE pinpipe.mine (id int)",
                "DROP TABLE pinpipe.dead_letter",
                "ALTER ROLE pinpipe_reader SUPERUSER",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)

        with psycopg.connect(dsn) as conn:  # nothing changed
            assert conn.execute("SELECT kafka_offset, reason FROM pinpipe.dead_letter").fetchall() == [(7, "bad")]
        # a second call (another dashboard start) keeps the same login working
        assert resolve.reader_dsn(settings, dsn) == reader


def test_a_configured_reader_login_is_used_and_an_external_server_has_none_made(traversable_dir, pg_dsn):
    external = load_settings(data_dir=traversable_dir / "data", postgres={"dsn": pg_dsn})
    assert resolve.reader_dsn(external, pg_dsn) is None
    configured = load_settings(
        data_dir=traversable_dir / "data",
        postgres={"dsn": pg_dsn, "reader_dsn": "postgresql://dash:pw@db.example:5432/pinpipe"},
    )
    assert resolve.reader_dsn(configured, pg_dsn) == "postgresql://dash:pw@db.example:5432/pinpipe"
