"""The source tables in PostgreSQL: the stand-in for the original read-only MySQL database."""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pinpipe.events import RAW_FIELDS, Table
from pinpipe.source.tables import SourceTables, raw_type

SOURCE_TABLE_NAMES: dict[Table, str] = {
    Table.PIN: "pinterest_data",
    Table.GEO: "geolocation_data",
    Table.USER: "user_data",
}
"""The original database's table names."""

# Column type of each raw Python type; the row number is the primary key.
SQL_TYPES: dict[type, str] = {
    int: "integer",
    float: "double precision",
    str: "text",
    datetime: "timestamp",  # without time zone: the source's datetimes are naive UTC
}


def load_tables(tables: SourceTables, dsn: str, *, schema: str = "public") -> dict[Table, int]:
    """(Re)create the three tables in ``schema`` and copy the rows in, in one transaction.

    Existing tables of the same names are replaced, so loading twice leaves one copy.
    Returns the number of rows written per table.
    """
    counts: dict[Table, int] = {}
    with psycopg.connect(dsn) as conn, conn.transaction(), conn.cursor() as cursor:
        # Only create a missing schema: CREATE needs a privilege a table owner may lack.
        if not cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema]).fetchone():
            cursor.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for table in Table:
            name = sql.Identifier(schema, SOURCE_TABLE_NAMES[table])
            columns = sql.SQL(", ").join(map(sql.Identifier, RAW_FIELDS[table]))
            cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
            cursor.execute(sql.SQL("CREATE TABLE {} ({})").format(name, _column_definitions(table)))
            copy = sql.SQL("COPY {} ({}) FROM STDIN").format(name, columns)
            with cursor.copy(copy) as writer:
                for row in tables.rows(table):
                    writer.write_row([row[field] for field in RAW_FIELDS[table]])
            counts[table] = cursor.rowcount
    return counts


def read_tables(dsn: str, *, schema: str = "public") -> SourceTables:
    """Read the three tables back, ordered by row number, values in their raw Python types."""
    rows = {}
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cursor:
        for table in Table:
            query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
                sql.SQL(", ").join(map(sql.Identifier, RAW_FIELDS[table])),
                sql.Identifier(schema, SOURCE_TABLE_NAMES[table]),
                sql.Identifier(table.row_field),
            )
            rows[table] = cursor.execute(query).fetchall()
    return SourceTables(pin=rows[Table.PIN], geo=rows[Table.GEO], user=rows[Table.USER])


def _column_definitions(table: Table) -> sql.Composed:
    definitions = []
    for field in RAW_FIELDS[table]:
        column_type = SQL_TYPES[raw_type(field)]
        if field == table.row_field:
            column_type += " PRIMARY KEY"
        definitions.append(sql.SQL("{} {}").format(sql.Identifier(field), sql.SQL(column_type)))
    return sql.SQL(", ").join(definitions)
