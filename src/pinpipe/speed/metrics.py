"""Real-time metrics as pure DataFrame functions over clean rows with arrival columns.

Event time is the broker time of each record (``broker_timestamp``): the source rows carry no
time of their own except geo's historical post time. Each function returns the *partial*
counts of the rows it is given (one micro-batch); the PostgreSQL writer adds them to the
stored windows, so a window's count is the sum over every batch that touched it, a late
record corrects its window, and windows that ended before the watermark are left alone
(:mod:`pinpipe.speed.writer`). The functions also work on a streaming DataFrame (with
``withWatermark``) for a cluster that prefers Spark's own state store.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pinpipe.cleaning import BROKER_TIMESTAMP

MINUTE = "1 minute"


def _window_columns() -> list:
    return [F.col("window.start").alias("window_start"), F.col("window.end").alias("window_end")]


def category_per_minute(pins: DataFrame) -> DataFrame:
    """Pin events per minute and category: ``window_start, window_end, category, events``."""
    return (
        pins.where(F.col("category").isNotNull() & F.col(BROKER_TIMESTAMP).isNotNull())
        .groupBy(F.window(BROKER_TIMESTAMP, MINUTE), "category")
        .agg(F.count(F.lit(1)).alias("events"))
        .select(*_window_columns(), "category", "events")
    )


def country_per_minute(geos: DataFrame) -> DataFrame:
    """Geo events per minute and country: ``window_start, window_end, country, events``."""
    return (
        geos.where(F.col("country").isNotNull() & F.col(BROKER_TIMESTAMP).isNotNull())
        .groupBy(F.window(BROKER_TIMESTAMP, MINUTE), "country")
        .agg(F.count(F.lit(1)).alias("events"))
        .select(*_window_columns(), "country", "events")
    )


def poster_activity(pins: DataFrame, window_s: int, slide_s: int) -> DataFrame:
    """Posts per poster over sliding windows of ``window_s`` every ``slide_s`` seconds.

    ``window_start, window_end, poster_name, posts, max_follower_count``: the most active
    posters of a window are its rows with the most posts (view ``pinpipe.top_posters``).
    """
    window = F.window(BROKER_TIMESTAMP, f"{window_s} seconds", f"{slide_s} seconds")
    return (
        pins.where(F.col("poster_name").isNotNull() & F.col(BROKER_TIMESTAMP).isNotNull())
        .groupBy(window, "poster_name")
        .agg(
            F.count(F.lit(1)).alias("posts"),
            F.max("follower_count").alias("max_follower_count"),
        )
        .select(*_window_columns(), "poster_name", "posts", "max_follower_count")
    )
