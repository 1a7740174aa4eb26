"""The nine analytical questions of DATA_SPEC.md section 4, as pure DataFrame functions.

Each answer takes ``posts``, the de-duplicated clean tables joined on ``ind``
(:func:`join_posts`: one row per distinct post), and returns exactly the output columns of the
spec: counts and follower counts ``bigint``, medians ``double`` (exact, interpolated like
``percentile_cont(0.5)``), years ``int``. "Most popular" ties go to the name that sorts first.
Rows whose value for a question is null are left out of that question; :data:`ELIGIBLE` gives,
per answer, the rows it is computed from (the quality checks use it).
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

AGE_GROUPS: tuple[tuple[str, int, int | None], ...] = (
    ("18-24", 18, 24),
    ("25-35", 25, 35),
    ("36-50", 36, 50),
    ("+50", 51, None),
)
"""Age group label, first and last age (None: no upper bound). Under 18 is in no group."""

POST_YEARS = (2018, 2022)
JOIN_YEARS = (2015, 2020)


def join_posts(pins: DataFrame, geos: DataFrame, users: DataFrame) -> DataFrame:
    """pin ⋈ geo ⋈ user on ``ind`` (inner): the clean columns of all three, ``ind`` once."""
    return pins.join(geos, "ind").join(users, "ind")


def age_group(age: Column | str) -> Column:
    """The age group label of an age, null for missing ages and ages under 18."""
    value = F.col(age) if isinstance(age, str) else age
    label = None
    for name, first, last in AGE_GROUPS:
        condition = value >= first if last is None else value.between(first, last)
        label = F.when(condition, name) if label is None else label.when(condition, name)
    return label


def _with_age_group(posts: DataFrame) -> DataFrame:
    return posts.withColumn("age_group", age_group("age")).where(F.col("age_group").isNotNull())


def _with_year(posts: DataFrame, column: str, years: tuple[int, int]) -> DataFrame:
    year = F.year(column).cast("int")
    return posts.withColumn("post_year", year).where(F.col("post_year").between(*years))


def _present(posts: DataFrame, *columns: str) -> DataFrame:
    for column in columns:
        posts = posts.where(F.col(column).isNotNull())
    return posts


def _first_per_group(df: DataFrame, group: str, value: str, name: str) -> DataFrame:
    """Per ``group``, the row with the highest ``value``; ties go to the smallest ``name``."""
    best = Window.partitionBy(group).orderBy(F.col(value).desc(), F.col(name).asc())
    return (
        df.withColumn("_rank", F.row_number().over(best))
        .where(F.col("_rank") == 1)
        .select(group, name, value)
        .orderBy(group)
    )


def _most_popular(rows: DataFrame, group: str, name: str, count: str) -> DataFrame:
    counts = rows.groupBy(group, name).agg(F.count(F.lit(1)).cast("bigint").alias(count))
    return _first_per_group(counts, group, count, name)


def _median(column: str) -> Column:
    """Exact median: the interpolated 50th percentile (``percentile`` is exact in Spark)."""
    return F.percentile(F.col(column), F.lit(0.5)).cast("double").alias("median_follower_count")


# The rows each question is computed from (nulls and out-of-range years removed).
def _q1_rows(posts: DataFrame) -> DataFrame:
    return _present(posts, "country", "category")


def _q2_rows(posts: DataFrame) -> DataFrame:
    return _present(_with_year(posts, "timestamp", POST_YEARS), "category")


def _q3_rows(posts: DataFrame) -> DataFrame:
    return _present(posts, "country", "poster_name", "follower_count")


def _q4_rows(posts: DataFrame) -> DataFrame:
    return _present(_with_age_group(posts), "category")


def _q5_rows(posts: DataFrame) -> DataFrame:
    return _present(_with_age_group(posts), "follower_count")


def _q6_rows(posts: DataFrame) -> DataFrame:
    return _present(_with_year(posts, "date_joined", JOIN_YEARS), "user_name")


def _q7_rows(posts: DataFrame) -> DataFrame:
    return _present(_with_year(posts, "date_joined", JOIN_YEARS), "follower_count")


def _q8_rows(posts: DataFrame) -> DataFrame:
    return _present(_with_age_group(_with_year(posts, "date_joined", JOIN_YEARS)), "follower_count")


def top_category_by_country(posts: DataFrame) -> DataFrame:
    """1. The most popular category in each country: ``country, category, category_count``."""
    return _most_popular(_q1_rows(posts), "country", "category", "category_count")


def top_category_by_year(posts: DataFrame) -> DataFrame:
    """2. The most popular category each year 2018-2022 (of geo.timestamp):
    ``post_year, category, category_count``."""
    return _most_popular(_q2_rows(posts), "post_year", "category", "category_count")


def top_user_by_country(posts: DataFrame) -> DataFrame:
    """3a. The poster with the most followers in each country:
    ``country, poster_name, follower_count``."""
    rows = _q3_rows(posts).select("country", "poster_name", "follower_count")
    return _first_per_group(rows, "country", "follower_count", "poster_name")


def top_country_by_followers(posts: DataFrame) -> DataFrame:
    """3b. The country whose top poster has the most followers (one row):
    ``country, follower_count``."""
    top = top_user_by_country(posts)
    return (
        top.orderBy(F.col("follower_count").desc(), F.col("country").asc())
        .limit(1)
        .select("country", "follower_count")
    )


def top_category_by_age_group(posts: DataFrame) -> DataFrame:
    """4. The most popular category per age group: ``age_group, category, category_count``."""
    return _most_popular(_q4_rows(posts), "age_group", "category", "category_count")


def median_followers_by_age_group(posts: DataFrame) -> DataFrame:
    """5. The median follower count per age group: ``age_group, median_follower_count``."""
    return _q5_rows(posts).groupBy("age_group").agg(_median("follower_count")).orderBy("age_group")


def users_joined_by_year(posts: DataFrame) -> DataFrame:
    """6. Users joined each year 2015-2020, a user being a distinct (user_name, date_joined):
    ``post_year, number_users_joined``."""
    distinct_users = F.count_distinct("user_name", "date_joined").cast("bigint")
    return (
        _q6_rows(posts)
        .groupBy("post_year")
        .agg(distinct_users.alias("number_users_joined"))
        .orderBy("post_year")
    )


def median_followers_by_join_year(posts: DataFrame) -> DataFrame:
    """7. The median follower count by joining year 2015-2020:
    ``post_year, median_follower_count``."""
    return _q7_rows(posts).groupBy("post_year").agg(_median("follower_count")).orderBy("post_year")


def median_followers_by_join_year_and_age_group(posts: DataFrame) -> DataFrame:
    """8. The median follower count by joining year and age group:
    ``age_group, post_year, median_follower_count``."""
    return (
        _q8_rows(posts)
        .groupBy("age_group", "post_year")
        .agg(_median("follower_count"))
        .orderBy("age_group", "post_year")
    )


Answer = Callable[[DataFrame], DataFrame]

ANSWERS: dict[str, Answer] = {
    "top_category_by_country": top_category_by_country,
    "top_category_by_year": top_category_by_year,
    "top_user_by_country": top_user_by_country,
    "top_country_by_followers": top_country_by_followers,
    "top_category_by_age_group": top_category_by_age_group,
    "median_followers_by_age_group": median_followers_by_age_group,
    "users_joined_by_year": users_joined_by_year,
    "median_followers_by_join_year": median_followers_by_join_year,
    "median_followers_by_join_year_and_age_group": median_followers_by_join_year_and_age_group,
}
"""The answers in the order of section 4; the name is the lake folder and PostgreSQL table."""

ELIGIBLE: dict[str, Answer] = {
    "top_category_by_country": _q1_rows,
    "top_category_by_year": _q2_rows,
    "top_user_by_country": _q3_rows,
    "top_country_by_followers": _q3_rows,
    "top_category_by_age_group": _q4_rows,
    "median_followers_by_age_group": _q5_rows,
    "users_joined_by_year": _q6_rows,
    "median_followers_by_join_year": _q7_rows,
    "median_followers_by_join_year_and_age_group": _q8_rows,
}
"""Per answer, the rows of ``posts`` it is computed from: non-empty input, non-empty answer."""
