"""The PostgreSQL schema ``pinpipe``, created and migrated by pinpipe itself.

Migrations are the versioned SQL files in ``pinpipe/store/migrations`` (``NNNN_name.sql``),
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
from pathlib import Path

import psycopg

from pinpipe.errors import TerminalError
from pinpipe.events import Table

SCHEMA = "pinpipe"
SPEED_TABLES: dict[Table, str] = {Table.PIN: "pinpipe.pin", Table.GEO: "pinpipe.geo", Table.USER: 'pinpipe."user"'}
"""The speed layer's clean tables, schema-qualified (``user`` is reserved: always quoted)."""
SPEED_STATE_TABLES = (
    *SPEED_TABLES.values(), "pinpipe.dead_letter", "pinpipe.stream_batch",
    "pinpipe.category_per_minute", "pinpipe.country_per_minute", "pinpipe.poster_pane",
    "pinpipe.stream_watermark",
)  # fmt: skip
"""Everything the stream job writes: rows that follow one broker's log (its offsets, its time)."""
READONLY_ROLE = "pinpipe_readonly"
READER_LOGIN = "pinpipe_reader"
"""The login role the embedded server makes for readers (a member of :data:`READONLY_ROLE`)."""
_LOCK_KEY = 0x70696E70  # "pinp": the advisory lock held while migrating
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(TerminalError):
    """An applied migration's file changed, or the files are misnumbered."""


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
    for entry in resources.files("pinpipe.store.migrations").iterdir():
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


def ensure_reader_login(dsn: str, password: str, login: str = READER_LOGIN) -> None:
    """Make ``login`` a role that logs in with ``password`` and can only read the schema.

    Its rights come from :data:`READONLY_ROLE` (SELECT on every ``pinpipe`` table, migration
    0004) and nothing else: no superuser, no CREATE, so a reader that turns its session's
    ``default_transaction_read_only`` off still cannot write. Idempotent; the password is reset.
    """
    from psycopg import sql

    apply_migrations(dsn)  # READONLY_ROLE and its grants
    role = sql.Identifier(login)
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,)).fetchone()
        verb = sql.SQL("ALTER ROLE" if exists else "CREATE ROLE")
        conn.execute(
            sql.SQL(
                "{} {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
                " INHERIT PASSWORD {}"
            ).format(verb, role, sql.Literal(password))
        )
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(READONLY_ROLE), role))
        conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(role))


def archive_speed_state(dsn: str, target: Path) -> dict[str, int]:
    """Copy every :data:`SPEED_STATE_TABLES` table holding rows to ``<target>/<table>.csv``
    (with a header row), then empty them all, in one transaction; returns the rows archived per
    table. For a new embedded broker, whose offsets start again at 0: the earlier rows would
    mix with the new log's, as the lake and the stream checkpoint are moved aside for it.
    The schema must be migrated (``pinpipe up`` has just done so)."""
    archived: dict[str, int] = {}
    with psycopg.connect(dsn) as conn:
        conn.execute(f"LOCK TABLE {', '.join(SPEED_STATE_TABLES)} IN ACCESS EXCLUSIVE MODE")
        for table in SPEED_STATE_TABLES:
            rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            if not rows:
                continue
            target.mkdir(parents=True, exist_ok=True)
            name = table.removeprefix(f"{SCHEMA}.").strip('"')
            with open(target / f"{name}.csv", "wb") as out, conn.cursor().copy(
                f"COPY {table} TO STDOUT WITH (FORMAT csv, HEADER)"
            ) as copy:
                for chunk in copy:
                    out.write(chunk)
            archived[name] = rows
        conn.execute(f"TRUNCATE {', '.join(SPEED_STATE_TABLES)}")
    return archived
