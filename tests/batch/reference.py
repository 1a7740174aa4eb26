"""The nine answers computed independently in DuckDB SQL, straight from the raw files.

Written from DATA_SPEC.md sections 3-4, not from the Spark code: de-duplication is global by
(broker timestamp, offset, partition), the cleaning rules are re-stated in SQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from pinpipe.placeholders import PLACEHOLDERS

WS = r"[\s\p{Zs}]"


def _list(values: Any) -> str:
    items = (values,) if isinstance(values, str) else values
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in items) + "]"


def _raw(lake: Path, table: str, key: str, row_field: str) -> str:
    files = f"{lake}/raw/{table}/*/*.parquet"
    return f"""
        SELECT value FROM read_parquet('{files}', hive_partitioning = true)
        WHERE value IS NOT NULL AND json_valid(value) AND json_type(value) = 'OBJECT'
          AND json_extract_string(value, '$.{key}') IS NOT NULL AND json_extract_string(value, '$.{row_field}') IS NOT NULL
        QUALIFY row_number() OVER (
            PARTITION BY json_extract_string(value, '$.{key}') ORDER BY "timestamp" DESC, "offset" DESC, "partition" DESC
        ) = 1"""


ANSWER_SQL = {
    "top_category_by_country": """
        SELECT country, category, category_count FROM (
            SELECT country, category, count(*) AS category_count FROM posts
            WHERE country IS NOT NULL AND category IS NOT NULL GROUP BY ALL)
        QUALIFY row_number() OVER (PARTITION BY country ORDER BY category_count DESC, category) = 1""",
    "top_category_by_year": """
        SELECT post_year, category, category_count FROM (
            SELECT year("timestamp") AS post_year, category, count(*) AS category_count FROM posts
            WHERE category IS NOT NULL AND year("timestamp") BETWEEN 2018 AND 2022 GROUP BY ALL)
        QUALIFY row_number() OVER (PARTITION BY post_year ORDER BY category_count DESC, category) = 1""",
    "top_user_by_country": """
        SELECT country, poster_name, follower_count FROM posts
        WHERE country IS NOT NULL AND poster_name IS NOT NULL AND follower_count IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY country ORDER BY follower_count DESC, poster_name) = 1""",
    "top_country_by_followers": """
        SELECT country, max(follower_count) AS follower_count FROM posts
        WHERE country IS NOT NULL AND poster_name IS NOT NULL AND follower_count IS NOT NULL
        GROUP BY country ORDER BY follower_count DESC, country LIMIT 1""",
    "top_category_by_age_group": """
        SELECT age_group, category, category_count FROM (
            SELECT age_group, category, count(*) AS category_count FROM posts
            WHERE age_group IS NOT NULL AND category IS NOT NULL GROUP BY ALL)
        QUALIFY row_number() OVER (PARTITION BY age_group ORDER BY category_count DESC, category) = 1""",
    "median_followers_by_age_group": """
        SELECT age_group, quantile_cont(follower_count, 0.5) AS median_follower_count FROM posts
        WHERE age_group IS NOT NULL AND follower_count IS NOT NULL GROUP BY age_group""",
    "users_joined_by_year": """
        SELECT year(date_joined) AS post_year,
               count(DISTINCT (user_name, date_joined)) AS number_users_joined
        FROM posts WHERE user_name IS NOT NULL AND year(date_joined) BETWEEN 2015 AND 2020
        GROUP BY ALL""",
    "median_followers_by_join_year": """
        SELECT year(date_joined) AS post_year,
               quantile_cont(follower_count, 0.5) AS median_follower_count
        FROM posts WHERE follower_count IS NOT NULL AND year(date_joined) BETWEEN 2015 AND 2020
        GROUP BY ALL""",
    "median_followers_by_join_year_and_age_group": """
        SELECT age_group, year(date_joined) AS post_year,
               quantile_cont(follower_count, 0.5) AS median_follower_count
        FROM posts WHERE age_group IS NOT NULL AND follower_count IS NOT NULL
          AND year(date_joined) BETWEEN 2015 AND 2020
        GROUP BY ALL""",
}


def reference_answers(lake: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Each answer's rows, sorted."""
    con = duckdb.connect(":memory:")
    con.execute(f"""
        CREATE MACRO trimmed(s) AS regexp_replace(s, '^{WS}+|{WS}+$', '', 'g');
        CREATE MACRO nullify(s, placeholders) AS
            CASE WHEN trimmed(s) = '' OR list_contains(placeholders, trimmed(s)) THEN NULL ELSE s END;
        CREATE MACRO utc(s) AS CAST(rtrim(s, 'Z') AS TIMESTAMP);
        CREATE TABLE pin AS
            SELECT CAST(json_extract_string(value, '$.index') AS INTEGER) AS ind,
                   nullify(json_extract_string(value, '$.category'), []) AS category,
                   nullify(json_extract_string(value, '$.poster_name'), {_list(PLACEHOLDERS["poster_name"])}) AS poster_name,
                   nullify(json_extract_string(value, '$.follower_count'), {_list(PLACEHOLDERS["follower_count"])}) AS fc
            FROM ({_raw(lake, "pin", "unique_id", "index")});
        CREATE TABLE geo AS
            SELECT CAST(json_extract_string(value, '$.ind') AS INTEGER) AS ind, nullify(json_extract_string(value, '$.country'), []) AS country,
                   utc(json_extract_string(value, '$.timestamp')) AS "timestamp"
            FROM ({_raw(lake, "geo", "ind", "ind")});
        CREATE TABLE users AS
            SELECT CAST(json_extract_string(value, '$.ind') AS INTEGER) AS ind,
                   nullif(concat_ws(' ', nullify(json_extract_string(value, '$.first_name'), []),
                                         nullify(json_extract_string(value, '$.last_name'), [])), '') AS user_name,
                   CAST(json_extract_string(value, '$.age') AS INTEGER) AS age, utc(json_extract_string(value, '$.date_joined')) AS date_joined
            FROM ({_raw(lake, "user", "ind", "ind")});
        CREATE TABLE posts AS
            SELECT *,
                CASE WHEN trimmed(fc) SIMILAR TO '[0-9]+(\\.[0-9]+)?[kKmM]?' THEN CAST(round(
                    CAST(regexp_extract(trimmed(fc), '^[0-9.]+') AS DECIMAL(38, 6))
                    * CASE lower(right(trimmed(fc), 1)) WHEN 'k' THEN 1000 WHEN 'm' THEN 1000000
                      ELSE 1 END) AS BIGINT) END AS follower_count,
                CASE WHEN age BETWEEN 18 AND 24 THEN '18-24' WHEN age BETWEEN 25 AND 35 THEN '25-35'
                     WHEN age BETWEEN 36 AND 50 THEN '36-50' WHEN age >= 51 THEN '+50' END AS age_group
            FROM pin JOIN geo USING (ind) JOIN users USING (ind);
    """)
    return {name: sorted(con.execute(sql).fetchall()) for name, sql in ANSWER_SQL.items()}
