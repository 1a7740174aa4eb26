"""The PostgreSQL schema ``pinpipe``, created and migrated by pinpipe itself.

Migrations are the versioned SQL files in ``pinpipe/serve/migrations`` (``NNNN_name.sql``),
applied in version order, each in its own transaction, recorded in
``pinpipe.schema_migrations`` with a checksum. :func:`apply_migrations` is idempotent and safe
to call from several processes at once (an advisory lock serialises them): the stream job and
the batch publisher both call it before writing. An applied file must never change; a new
change is a new file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from pinpipe.events import Table

SCHEMA = "pinpipe"
SPEED_TABLES: dict[Table, str] = {Table.PIN: "pinpipe.pin", Table.GEO: "pinpipe.geo", Table.USER: 'pinpipe."user"'}
"""The speed layer's clean tables, schema-qualified (``user`` is reserved: always quoted)."""
READONLY_ROLE = "pinpipe_readonly"
_LOCK_KEY = 0x70696E70  # "pinp": the advisory lock held while migrating
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """An applied migration's file changed, or the files are misnumbered (terminal)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """The migration files shipped with pinpipe, in version order."""
    found = []
    for entry in resources.files("pinpipe.serve.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return found


def apply_migrations(dsn: str) -> list[int]:
    """Bring the ``pinpipe`` schema up to date; returns the versions applied now (maybe none)."""
    applied_now: list[int] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for migration in migrations():
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                row = conn.execute(
                    f"SELECT checksum FROM {SCHEMA}.schema_migrations WHERE version = %s",
                    (migration.version,),
                ).fetchone()
                if row is not None:
                    if row[0] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} changed after it "
                            "was applied; add a new migration instead"
                        )
                    continue
                conn.execute(migration.sql)
                conn.execute(
                    f"INSERT INTO {SCHEMA}.schema_migrations (version, name, checksum)"
                    " VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
                applied_now.append(migration.version)
    return applied_now


def schema_version(dsn: str) -> int:
    """The highest applied migration version (0 before any)."""
    with psycopg.connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.schema_migrations",)).fetchone()
        if exists is None or exists[0] is None:
            return 0
        row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.schema_migrations").fetchone()
        return int(row[0]) if row else 0
