"""Publish the lake's answers to PostgreSQL: schema ``pinpipe``, one table per answer.

Reads the answer Parquet with pyarrow (no Spark needed, so the Airflow publish task is light)
and replaces every answer table's rows in one transaction: readers see the previous answers
or the new ones, never a mix.
"""

from __future__ import annotations

import psycopg
import pyarrow as pa
from psycopg import sql

from pinpipe.config import Settings
from pinpipe.services.resolve import postgres_dsn

SCHEMA = "pinpipe"

_PG_TYPES = {
    pa.string(): "text",
    pa.large_string(): "text",
    pa.int64(): "bigint",
    pa.int32(): "integer",
    pa.float64(): "double precision",
}


def _column_type(arrow_type: pa.DataType) -> str:
    try:
        return _PG_TYPES[arrow_type]
    except KeyError:
        raise TypeError(f"no PostgreSQL type for answer column type {arrow_type}") from None


def write_answers(dsn: str, answers: dict[str, pa.Table]) -> dict[str, int]:
    """Create the answer tables if needed and replace their rows, all in one transaction."""
    written = {}
    with psycopg.connect(dsn) as conn, conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
        for name, table in answers.items():
            target = sql.Identifier(SCHEMA, name)
            columns = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(_column_type(f.type)))
                for f in table.schema
            )
            cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(target, columns))
            cur.execute(sql.SQL("DELETE FROM {}").format(target))
            names = sql.SQL(", ").join(sql.Identifier(f.name) for f in table.schema)
            copy = sql.SQL("COPY {} ({}) FROM STDIN").format(target, names)
            with cur.copy(copy) as writer:
                for row in table.to_pylist():
                    writer.write_row(tuple(row[f.name] for f in table.schema))
            written[name] = table.num_rows
    return written


def publish_answers(settings: Settings, answers: dict[str, pa.Table]) -> dict[str, int]:
    """:func:`write_answers` to the PostgreSQL of ``settings`` (embedded or configured)."""
    from pinpipe.store.schema import apply_migrations

    with postgres_dsn(settings) as dsn:
        apply_migrations(dsn)  # the answer tables are part of the one versioned schema
        return write_answers(dsn, answers)
