"""Reading the speed layer's PostgreSQL tables in tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
from psycopg.rows import dict_row

CLEAN_COLUMNS = {
    "pin": ("ind", "unique_id", "title", "description", "follower_count", "poster_name", "tag_list",
            "is_image_or_video", "image_src", "save_location", "category", "downloaded"),
    "geo": ("ind", "country", "coordinates", "timestamp"),
    "user": ("ind", "user_name", "age", "date_joined"),
}


def query(dsn: str, text: str, params: tuple = ()) -> list[dict]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(text, params).fetchall()


def clean_rows(dsn: str, table: str) -> list[dict]:
    """The clean columns of a speed table, ordered by natural key."""
    columns = ", ".join(f'"{c}"' for c in CLEAN_COLUMNS[table])
    key = "unique_id" if table == "pin" else "ind"
    try:
        return query(dsn, f'SELECT {columns} FROM pinpipe."{table}" ORDER BY {key}')
    except psycopg.errors.UndefinedTable:
        return []


def wait_for(
    condition: Callable[[], bool], timeout_s: float = 180.0, what: str = "condition", query: object = None
) -> None:
    """Poll ``condition``; fail at once if the streaming ``query`` died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if query is not None and query.exception() is not None:
            raise AssertionError(f"the stream failed: {query.exception()}")
        try:
            if condition():
                return
        except psycopg.errors.UndefinedTable:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
