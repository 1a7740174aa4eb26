import os
import pwd
import socket
from pathlib import Path

import psycopg
import pytest

from pinpipe.processes import pid_is_alive, process_cmdline, process_table
from pinpipe.services.pg_common import PostgresStartError, mask_dsn, postgres_is_healthy
from pinpipe.services.postgres import EmbeddedPostgres


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def _password(server: EmbeddedPostgres) -> str:
    return server.password_file.read_text().strip()


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        (
            "postgresql://pinpipe:s3cr%40t@127.0.0.1:5432/db",
            "postgresql://pinpipe:****@127.0.0.1:5432/db",
        ),
        ("postgres://u:pw@h/db?sslmode=require", "postgres://u:****@h/db?sslmode=require"),
        ("postgresql://u@h:1/db", "postgresql://u@h:1/db"),
        ("host=h user=u password=pw dbname=d", "host=h user=u password=**** dbname=d"),
        ("host=h password='a b' dbname=d", "host=h password=**** dbname=d"),
        ("postgresql://h/db?user=u&password=pw&x=1", "postgresql://h/db?user=u&password=****&x=1"),
    ],
)
def test_mask_dsn(dsn, masked):
    assert mask_dsn(dsn) == masked


@pytest.mark.integration
def test_session_server_answers(pg_dsn):
    assert postgres_is_healthy(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT current_database(), current_user").fetchone() == (
            "pinpipe",
            "pinpipe",
        )


@pytest.mark.integration
def test_data_survives_restart_and_no_process_is_left(traversable_dir):
    server = EmbeddedPostgres(traversable_dir / "postgres", database="events")
    server.start()
    first_pid = server.pid
    assert first_pid is not None and pid_is_alive(first_pid)
    assert mask_dsn(server.dsn) == server.masked_dsn
    assert _password(server) not in server.masked_dsn
    assert server.dsn.endswith("/events")
    with psycopg.connect(server.dsn) as conn:
        conn.execute("CREATE TABLE pins (id int PRIMARY KEY, title text)")
        conn.execute("INSERT INTO pins VALUES (1, 'a'), (2, 'b')")

    server.stop()
    assert not pid_is_alive(first_pid)
    assert not server.is_running()
    server.stop()  # idempotent

    with server:
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT id, title FROM pins ORDER BY id").fetchall() == [
                (1, "a"),
                (2, "b"),
            ]
        second_pid = server.pid
    assert not pid_is_alive(second_pid)


@pytest.mark.integration
def test_runs_unprivileged_and_keeps_the_password_private(traversable_dir):
    with EmbeddedPostgres(traversable_dir / "postgres") as server:
        expected_uid = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else os.geteuid()
        assert _uid_of(server.pid) == expected_uid
        info = server.password_file.stat()
        assert info.st_mode & 0o777 == 0o600
        assert info.st_uid == expected_uid
        assert server.password_file.parent == server.data_dir.parent
        assert _password(server) not in server.log_path.read_text()


@pytest.mark.integration
def test_detached_server_is_found_by_another_instance(traversable_dir):
    owner = EmbeddedPostgres(traversable_dir / "postgres")
    owner.start()
    try:
        other = EmbeddedPostgres(traversable_dir / "postgres")
        assert other.is_running()
        other.start()
        assert other.reused
        assert (other.pid, other.port) == (owner.pid, owner.port)
        assert postgres_is_healthy(other.dsn)
        other.stop()
        assert not pid_is_alive(owner.pid)
    finally:
        owner.stop()


@pytest.mark.integration
def test_automatic_port_is_retried_once_when_taken(traversable_dir, monkeypatch):
    from pinpipe.services import postgres as postgres_module

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken_port = taken.getsockname()[1]
        ports = iter([taken_port, postgres_module.free_port()])
        monkeypatch.setattr(postgres_module, "free_port", lambda host: next(ports))

        with EmbeddedPostgres(traversable_dir / "postgres") as server:
            assert server.port != taken_port
            assert postgres_is_healthy(server.dsn)


@pytest.mark.integration
def test_taken_explicit_port_is_a_clear_error(traversable_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        server = EmbeddedPostgres(traversable_dir / "postgres", port=taken.getsockname()[1])

        with pytest.raises(PostgresStartError, match="could not bind"):
            server.start()
    assert not server.is_running()


@pytest.mark.integration
def test_a_server_that_starts_but_cannot_be_used_is_stopped_again(traversable_dir):
    # A fixture's set-up failing after pg_ctl started the server: here creating the database
    # fails (a name PostgreSQL cannot hold); the server it started must not outlive the error.
    data_dir = traversable_dir / "postgres"
    server = EmbeddedPostgres(data_dir, database="bad\x00name")

    with pytest.raises(psycopg.Error):
        server.start()

    assert not server.is_running()
    assert [p.pid for p in process_table() if str(data_dir) in process_cmdline(p.pid)] == []
