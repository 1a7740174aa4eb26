"""What the dashboard reads from PostgreSQL, over one read-only connection.

The dashboard logs in as a reader (``pinpipe.services.resolve.reader_dsn``: a role granted
``pinpipe_readonly``, SELECT only), so it cannot write whatever it sets; every session also
sets ``default_transaction_read_only``. Tables that do not exist yet (the stream or the batch
job never ran) read as empty.
"""

from __future__ import annotations

import threading
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg

from pinpipe.events import ANSWER_NAMES
from pinpipe.store.runs import latest_runs, run_summary
from pinpipe.store.schema import SPEED_TABLES

ROW_TABLES = {table.value: name for table, name in SPEED_TABLES.items()} | {"dead_letter": "pinpipe.dead_letter"}
MAX_ANSWER_ROWS = 200


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


class ReadOnlyStore:
    """One lazily opened read-only connection, shared by the request threads under a lock."""

    def __init__(self, dsn: str, connect_timeout_s: int = 3) -> None:
        self._dsn = dsn
        self._timeout = connect_timeout_s
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self._dsn,
                autocommit=True,  # each statement its own (read-only) transaction: fresh data
                connect_timeout=self._timeout,
                options="-c default_transaction_read_only=on -c statement_timeout=5000",
                application_name="pinpipe-dashboard",
            )
        return self._conn

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of ``sql``; [] when a table is missing; reconnects once after a broken connection."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    return self._connection().execute(sql, params).fetchall()
                except psycopg.errors.UndefinedTable:
                    return []
                except psycopg.OperationalError:
                    self.close_unlocked()
                    if attempt == 2:
                        raise
        return []

    def columns_and_rows(self, sql: str) -> tuple[list[str], list[list[Any]]]:
        with self._lock:
            try:
                cursor = self._connection().execute(sql)
            except psycopg.errors.UndefinedTable:
                return [], []
            except psycopg.OperationalError:
                self.close_unlocked()
                raise
            names = [column.name for column in cursor.description or []]
            return names, [[_plain(v) for v in row] for row in cursor.fetchall()]

    def run_summary(self) -> tuple[dict[str, int], float]:
        with self._lock:
            try:
                return run_summary(self._connection())
            except psycopg.errors.UndefinedTable:
                return {"success": 0, "failed": 0}, 0.0
            except psycopg.OperationalError:
                self.close_unlocked()
                raise

    def latest_runs(self) -> list[dict]:
        with self._lock:
            try:
                runs = latest_runs(self._connection())
            except psycopg.errors.UndefinedTable:
                return []
            except psycopg.OperationalError:
                self.close_unlocked()
                raise
        return [{k: _plain(v) for k, v in vars(run).items()} for run in runs]

    def close_unlocked(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        with self._lock:
            self.close_unlocked()

    # --- the figures --------------------------------------------------------------------------

    def row_counts(self) -> dict[str, int]:
        """Rows in pin, geo, user and dead_letter."""
        counts = {}
        for name, table in ROW_TABLES.items():
            rows = self.query(f"SELECT count(*) FROM {table}")
            counts[name] = int(rows[0][0]) if rows else 0
        return counts

    def top_categories(self, minutes: int = 10, limit: int = 8) -> list[dict]:
        rows = self.query(
            "SELECT category, sum(events)::bigint AS events FROM pinpipe.category_per_minute"
            " WHERE window_end > now() - make_interval(mins => %s)"
            " GROUP BY category ORDER BY events DESC, category LIMIT %s",
            (minutes, limit),
        )
        return [{"category": c, "events": int(e)} for c, e in rows]

    def top_countries(self, minutes: int = 10, limit: int = 8) -> list[dict]:
        rows = self.query(
            "SELECT country, sum(events)::bigint AS events FROM pinpipe.country_per_minute"
            " WHERE window_end > now() - make_interval(mins => %s)"
            " GROUP BY country ORDER BY events DESC, country LIMIT %s",
            (minutes, limit),
        )
        return [{"country": c, "events": int(e)} for c, e in rows]

    def top_posters(self, limit: int = 8) -> list[dict]:
        """Posters of the sliding window that covers the most recent time (the longest one
        still open: the last ``poster_window_s``); the last closed window when none is open."""
        # Straight from that window's panes (the view poster_activity adds up every window).
        rows = self.query(
            "WITH current AS ("
            "  SELECT date_bin(slide, now(), timestamptz '1970-01-01 00:00:00+00') - window_length + slide"
            "         AS window_start, window_length FROM pinpipe.poster_window)"
            " SELECT p.poster_name, sum(p.posts)::bigint AS posts, max(p.max_follower_count),"
            "        c.window_start, c.window_start + c.window_length"
            " FROM pinpipe.poster_pane p JOIN current c"
            "   ON p.pane_start >= c.window_start AND p.pane_start < c.window_start + c.window_length"
            " GROUP BY p.poster_name, c.window_start, c.window_length"
            " ORDER BY posts DESC, p.poster_name LIMIT %s",
            (limit,),
        )
        if not rows:
            rows = self.query(
                "SELECT poster_name, posts, max_follower_count, window_start, window_end"
                " FROM pinpipe.top_posters ORDER BY posts DESC, poster_name LIMIT %s",
                (limit,),
            )
        return [
            {"poster_name": n, "posts": int(p), "max_follower_count": f,
             "window_start": _plain(s), "window_end": _plain(e)}
            for n, p, f, s, e in rows
        ]  # fmt: skip

    def stream_progress(self, minutes: int = 5) -> dict:
        """Micro-batches and records of the last minutes, and broker -> PostgreSQL latency of
        the rows they wrote (pin rows: ``updated_at - broker_timestamp``)."""
        batches = self.query(
            "SELECT count(*), coalesce(sum(records), 0), max(committed_at) FROM pinpipe.stream_batch"
            " WHERE committed_at > now() - make_interval(mins => %s)",
            (minutes,),
        )
        latency = self.query(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s), percentile_cont(0.99) WITHIN GROUP (ORDER BY s)"
            " FROM (SELECT extract(epoch FROM updated_at - broker_timestamp)::float8 AS s FROM pinpipe.pin"
            "       WHERE updated_at > now() - make_interval(mins => %s) AND broker_timestamp IS NOT NULL) t",
            (minutes,),
        )
        count, records, last = batches[0] if batches else (0, 0, None)
        p50, p99 = latency[0] if latency else (None, None)
        return {
            "batches": int(count), "records": int(records), "last_batch_at": _plain(last),
            "latency_p50_s": p50, "latency_p99_s": p99, "window_minutes": minutes,
        }  # fmt: skip

    def answers(self) -> dict[str, dict]:
        """Every answer table: its columns and (up to 200) rows, in section 4 order."""
        out = {}
        for name in ANSWER_NAMES:
            columns, rows = self.columns_and_rows(f"SELECT * FROM pinpipe.{name} ORDER BY 1, 2 LIMIT {MAX_ANSWER_ROWS}")
            out[name] = {"columns": columns, "rows": rows}
        return out
