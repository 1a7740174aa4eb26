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

    def partial_sql(self, stage: str, window_s: int, slide_s: int) -> sql.Composed:
        """``INSERT INTO <metric's staging table>`` the partial counts of the rows in ``stage``."""
        return sql.SQL(_PARTIAL[self.name]).format(
            target=sql.Identifier(f"stage_{self.name}"),
            stage=sql.Identifier(stage),
            window=sql.Literal(f"{int(window_s)} seconds"),
            slide=sql.Literal(f"{int(slide_s)} seconds"),
            windows=sql.Literal(-(-int(window_s) // int(slide_s))),
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
    # Every window holding t: the last one starting at or before t, and the ones before it
    # that have not ended by t.
    "poster_activity": (
        "INSERT INTO {target} (window_start, window_end, poster_name, posts, max_follower_count) "
        "SELECT w, w + {window}::interval, poster_name, count(*), max(follower_count) FROM ("
        " SELECT date_bin({slide}::interval, p.broker_timestamp, {epoch}) - i * {slide}::interval AS w,"
        " p.broker_timestamp, p.poster_name, p.follower_count"
        " FROM {stage} AS p CROSS JOIN generate_series(0, {windows} - 1) AS i"
        " WHERE p.poster_name IS NOT NULL AND p.broker_timestamp IS NOT NULL) AS s "
        "WHERE broker_timestamp < w + {window}::interval "
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
        "poster_activity", Table.PIN,
        ("window_start", "window_end", "poster_name", "posts", "max_follower_count"),
        ("window_start", "window_end", "poster_name"),
        {
            "posts": "t.posts + excluded.posts",
            "max_follower_count": "greatest(t.max_follower_count, excluded.max_follower_count)",
        },
    ),
)
"""The real-time metric tables (migration 0002), in the order they are written."""
