"""Real-time metrics, computed in PostgreSQL from a micro-batch's staged clean rows.

Event time is the broker time of each record (``broker_timestamp``): the source rows carry no
time of their own except geo's historical post time. Each metric is an SQL aggregate over the
staging table the writer has just COPYed the batch's clean rows into, so the counts are made
inside the batch's transaction and Spark runs no shuffle for them. The result is the *partial*
count of one micro-batch; :class:`~pinpipe.speed.writer.PostgresWriter` adds it to the stored
windows, so a window's count is the sum over every batch that touched it, a late record
corrects its window, and windows that ended before the watermark are left alone.

Windows follow Spark's ``window()``: aligned on the Unix epoch, start included, end excluded;
a sliding window of length ``W`` every ``S`` seconds holds ``t`` when ``start <= t < start + W``.
Sliding windows are stored as *panes*, tumbling windows of length ``S`` (``poster_pane``):
a record counts in one pane rather than in ``W / S`` windows, and the view
``pinpipe.poster_activity`` adds a window's panes up (migration 0007).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from pinpipe.events import Table

EPOCH = "timestamptz '1970-01-01 00:00:00+00'"


@dataclass(frozen=True)
class Metric:
    """One metric table: its columns, its key, how a batch's partial value merges in."""

    name: str
    source: Table
    columns: tuple[str, ...]
    key: tuple[str, ...]
    merge: dict[str, str]
    end: str = "window_end"
    """The column a row's window ends at: rows ending at or before the watermark are final."""

    def partial_sql(self, stage: str, slide_s: int) -> sql.Composed:
        """``INSERT INTO <metric's staging table>`` the partial counts of the rows in ``stage``."""
        return sql.SQL(_PARTIAL[self.name]).format(
            target=sql.Identifier(f"stage_{self.name}"),
            stage=sql.Identifier(stage),
            slide=sql.Literal(f"{int(slide_s)} seconds"),
            epoch=sql.SQL(EPOCH),
        )


_PER_MINUTE = (
    "INSERT INTO {{target}} (window_start, window_end, {field}, events) "
    "SELECT w, w + interval '1 minute', {field}, count(*) FROM ("
    " SELECT date_bin(interval '1 minute', broker_timestamp, {{epoch}}) AS w, {field} FROM {{stage}}"
    " WHERE {field} IS NOT NULL AND broker_timestamp IS NOT NULL) AS s "
    "GROUP BY w, {field}"
)

_PARTIAL = {
    "category_per_minute": _PER_MINUTE.format(field="category"),
    "country_per_minute": _PER_MINUTE.format(field="country"),
    # The one pane (a slide-long tumbling window) holding t.
    "poster_pane": (
        "INSERT INTO {target} (pane_start, pane_end, poster_name, posts, max_follower_count) "
        "SELECT w, w + {slide}::interval, poster_name, count(*), max(follower_count) FROM ("
        " SELECT date_bin({slide}::interval, broker_timestamp, {epoch}) AS w, poster_name, follower_count"
        " FROM {stage} WHERE poster_name IS NOT NULL AND broker_timestamp IS NOT NULL) AS s "
        "GROUP BY w, poster_name"
    ),
}

METRICS: tuple[Metric, ...] = (
    Metric(
        "category_per_minute", Table.PIN,
        ("window_start", "window_end", "category", "events"),
        ("window_start", "category"),
        {"events": "t.events + excluded.events"},
    ),
    Metric(
        "country_per_minute", Table.GEO,
        ("window_start", "window_end", "country", "events"),
        ("window_start", "country"),
        {"events": "t.events + excluded.events"},
    ),
    Metric(
        "poster_pane", Table.PIN,
        ("pane_start", "pane_end", "poster_name", "posts", "max_follower_count"),
        ("pane_start", "poster_name"),
        {
            "posts": "t.posts + excluded.posts",
            "max_follower_count": "greatest(t.max_follower_count, excluded.max_follower_count)",
        },
        end="pane_end",
    ),
)
"""The real-time metric tables (migration 0002), in the order they are written."""
