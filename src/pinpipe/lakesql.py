"""Ad-hoc SQL over the lake (``pinpipe sql``): DuckDB views of the clean tables and answers.

Views: ``pin``, ``geo``, ``"user"`` (quoted: a reserved word) and ``users`` (the same), one row
per natural key (the latest ``dt`` partition wins, like the batch job), ``posts`` (the three
joined on ``ind``) and one view per answer (``top_category_by_country``, ...). Beside them the
stream job's Delta tables, every record as it arrived: ``stream_pin``, ``stream_geo``,
``stream_user`` (clean columns, arrival columns, ``dt``), read through delta-rs as Arrow
datasets (DuckDB's delta extension cannot be downloaded here, and is not needed). Only what
exists in the lake gets a view. The role Presto played in the original projects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pinpipe.config import Settings
from pinpipe.events import CLEAN_COLUMNS, Table

STREAM_VIEWS: dict[Table, str] = {table: f"stream_{table.value}" for table in Table}
"""The view of each stream Delta table."""


@dataclass(frozen=True)
class SqlResult:
    """Column names and rows of a query."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


def _lake_dir(settings: Settings) -> Path:
    root = settings.lake.root or str(settings.data_dir / "lake")
    if "://" in root:
        raise NotImplementedError("pinpipe sql reads a local lake; an s3:// lake needs httpfs")
    return Path(root)


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def lake_views(settings: Settings) -> dict[str, str]:
    """``CREATE VIEW`` statements for everything present in the lake, by view name."""
    lake = _lake_dir(settings)
    views: dict[str, str] = {}
    for table, columns in CLEAN_COLUMNS.items():
        files = lake / "clean" / table.value
        if not any(files.glob("dt=*/*.parquet")):
            continue
        key = table.natural_key
        select = ", ".join(f'"{c}"' for c in columns)
        source = f"read_parquet({_quote(files / 'dt=*' / '*.parquet')}, hive_partitioning = true)"
        body = (
            f"SELECT {select} FROM {source} "
            f'QUALIFY row_number() OVER (PARTITION BY "{key}" ORDER BY dt DESC) = 1'
        )
        views[table.value] = f'CREATE VIEW "{table.value}" AS {body}'
    if {"pin", "geo", "user"} <= views.keys():
        views["users"] = 'CREATE VIEW users AS SELECT * FROM "user"'
        views["posts"] = (
            'CREATE VIEW posts AS SELECT * FROM pin JOIN geo USING (ind) JOIN "user" USING (ind)'
        )
    answers = lake / "answers"
    for folder in sorted(answers.iterdir()) if answers.is_dir() else []:
        if (
            folder.is_dir()
            and not folder.name.startswith(("_", "."))
            and any(folder.glob("*.parquet"))
        ):
            views[folder.name] = (
                f'CREATE VIEW "{folder.name}" AS SELECT * FROM '
                f"read_parquet({_quote(folder / '*.parquet')})"
            )
    return views


def stream_datasets(settings: Settings) -> dict[str, Any]:
    """The stream's Delta tables that exist, as Arrow datasets of their current version, by view
    name (:data:`STREAM_VIEWS`); none without the ``deltalake`` package."""
    import importlib.util

    _lake_dir(settings)  # a local lake, as for the other views
    if importlib.util.find_spec("deltalake") is None:  # pragma: no cover - depends on the install
        return {}
    from pinpipe.speed.delta import open_stream_table

    datasets = {}
    for table, view in STREAM_VIEWS.items():
        delta = open_stream_table(settings, table)
        if delta is not None:
            datasets[view] = delta.to_pyarrow_dataset()
    return datasets


def connect(settings: Settings) -> Any:
    """An in-memory DuckDB connection with the lake's views (UTC time zone)."""
    try:
        import duckdb
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("pinpipe sql needs duckdb: pip install 'pinpipe[sql]'") from exc
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    for statement in lake_views(settings).values():
        con.execute(statement)
    for view, dataset in stream_datasets(settings).items():
        con.register(view, dataset)  # a view DuckDB scans with projection and filter pushdown
    return con


def run_sql(settings: Settings, query: str) -> SqlResult:
    """Run ``query`` over the lake's views; DuckDB's own errors propagate (bad SQL, no view)."""
    con = connect(settings)
    try:
        cursor = con.execute(query)
        columns = [item[0] for item in cursor.description or []]
        return SqlResult(columns, cursor.fetchall() if columns else [])
    finally:
        con.close()
