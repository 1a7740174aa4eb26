"""The nine answers of DATA_SPEC.md section 4 over nine hand-written posts.

Every expected row below was worked out by hand from POSTS (see the comments).
"""

from __future__ import annotations

from datetime import datetime

import pytest
from pyspark.testing import assertDataFrameEqual

from pinpipe.batch import answers as A

pytestmark = pytest.mark.integration

POSTS_SCHEMA = (
    "ind int, category string, follower_count bigint, poster_name string, country string, "
    "timestamp timestamp, user_name string, age int, date_joined timestamp"
)
D = datetime
POSTS = [
    (1, "art", 100, "Ann", "Chad", D(2018, 5, 1), "Ann A", 20, D(2015, 1, 1)),
    (2, "travel", 300, "Bob", "Chad", D(2018, 6, 1), "Bob B", 30, D(2016, 2, 2)),
    (3, "travel", 300, "Cid", "Chad", D(2019, 7, 1), "Cid C", 40, D(2016, 3, 3)),
    (4, "art", None, None, "Chad", D(2017, 1, 1), "Ann A", 20, D(2015, 1, 1)),  # Ann A again
    (5, "beauty", 50, "Dee", "Peru", D(2022, 12, 31, 23, 59, 59), "Dee D", 60, D(2017, 4, 4)),
    (6, "quotes", 7, "Eve", "Peru", D(2023, 1, 1), "Eve E", 17, D(2014, 5, 5)),  # out of range
    (7, None, 1000, "Fay", None, D(2020, 1, 1), None, None, None),  # nulls everywhere
    (8, "christmas", 10, "Gus", "Peru", D(2021, 1, 1), "Gus G", 24, D(2015, 6, 6)),
    (9, "art", 1, "Hal", "Chad", D(2018, 8, 1), "Hal H", 36, D(2016, 7, 7)),
]


@pytest.fixture(scope="module")
def posts(spark):
    return spark.createDataFrame(POSTS, POSTS_SCHEMA)


def expect(spark, rows, schema):
    return spark.createDataFrame(rows, schema)


def test_top_category_by_country(spark, posts):
    # Chad: art 3 (1, 4, 9), travel 2. Peru: beauty, quotes, christmas 1 each -> beauty.
    assertDataFrameEqual(
        A.top_category_by_country(posts),
        expect(
            spark,
            [("Chad", "art", 3), ("Peru", "beauty", 1)],
            "country string, category string, category_count bigint",
        ),
    )


def test_top_category_by_year(spark, posts):
    # 2018: art 2 (1, 9), travel 1. 2017 and 2023 are outside 2018-2022; post 7 has no category.
    assertDataFrameEqual(
        A.top_category_by_year(posts),
        expect(
            spark,
            [(2018, "art", 2), (2019, "travel", 1), (2021, "christmas", 1), (2022, "beauty", 1)],
            "post_year int, category string, category_count bigint",
        ),
    )


def test_top_user_by_country(spark, posts):
    # Chad: Bob and Cid both 300 -> Bob. Peru: Dee 50 > Gus 10 > Eve 7.
    assertDataFrameEqual(
        A.top_user_by_country(posts),
        expect(
            spark,
            [("Chad", "Bob", 300), ("Peru", "Dee", 50)],
            "country string, poster_name string, follower_count bigint",
        ),
    )


def test_top_country_by_followers(spark, posts):
    assertDataFrameEqual(
        A.top_country_by_followers(posts),
        expect(spark, [("Chad", 300)], "country string, follower_count bigint"),
    )


def test_top_country_by_followers_breaks_ties_by_country(spark):
    tied = spark.createDataFrame(
        [
            (1, "art", 500, "Zed", "Peru", D(2019, 1, 1), "Zed Z", 30, D(2016, 1, 1)),
            (2, "art", 500, "Amy", "Chad", D(2019, 1, 1), "Amy A", 30, D(2016, 1, 1)),
        ],
        POSTS_SCHEMA,
    )
    assertDataFrameEqual(
        A.top_country_by_followers(tied),
        expect(spark, [("Chad", 500)], "country string, follower_count bigint"),
    )


def test_top_category_by_age_group(spark, posts):
    # 18-24: art 2 (1, 4), christmas 1. 36-50: travel 1, art 1 -> art. Age 17 is in no group.
    assertDataFrameEqual(
        A.top_category_by_age_group(posts),
        expect(
            spark,
            [
                ("18-24", "art", 2),
                ("25-35", "travel", 1),
                ("36-50", "art", 1),
                ("+50", "beauty", 1),
            ],
            "age_group string, category string, category_count bigint",
        ),
    )


def test_median_followers_by_age_group(spark, posts):
    # 18-24: [10, 100] -> 55.0 (interpolated); 36-50: [1, 300] -> 150.5; post 4 has no count.
    assertDataFrameEqual(
        A.median_followers_by_age_group(posts),
        expect(
            spark,
            [("18-24", 55.0), ("25-35", 300.0), ("36-50", 150.5), ("+50", 50.0)],
            "age_group string, median_follower_count double",
        ),
    )


def test_users_joined_by_year(spark, posts):
    # 2015: Ann A (posts 1 and 4: one user) and Gus G; 2016: Bob, Cid, Hal; 2014 is out.
    assertDataFrameEqual(
        A.users_joined_by_year(posts),
        expect(
            spark, [(2015, 2), (2016, 3), (2017, 1)], "post_year int, number_users_joined bigint"
        ),
    )


def test_median_followers_by_join_year(spark, posts):
    # 2015: [10, 100] -> 55.0; 2016: [1, 300, 300] -> 300.0; 2017: [50].
    assertDataFrameEqual(
        A.median_followers_by_join_year(posts),
        expect(
            spark,
            [(2015, 55.0), (2016, 300.0), (2017, 50.0)],
            "post_year int, median_follower_count double",
        ),
    )


def test_median_followers_by_join_year_and_age_group(spark, posts):
    assertDataFrameEqual(
        A.median_followers_by_join_year_and_age_group(posts),
        expect(
            spark,
            [
                ("18-24", 2015, 55.0),
                ("25-35", 2016, 300.0),
                ("36-50", 2016, 150.5),
                ("+50", 2017, 50.0),
            ],
            "age_group string, post_year int, median_follower_count double",
        ),
    )


def test_median_of_an_even_count_interpolates(spark):
    rows = [
        (n, "art", count, "P", "Chad", D(2019, 1, 1), "U", 30, D(2016, 1, 1))
        for n, count in enumerate([1, 2, 3, 10])
    ]
    result = A.median_followers_by_join_year(spark.createDataFrame(rows, POSTS_SCHEMA))
    assert result.collect() == [(2016, 2.5)]  # (2 + 3) / 2, not 2 or 3


def test_age_group_bounds(spark):
    ages = [17, 18, 24, 25, 35, 36, 50, 51, 90, None]
    df = spark.createDataFrame([(a,) for a in ages], "age int")
    assert [r.g for r in df.select(A.age_group("age").alias("g")).collect()] == [
        None,
        "18-24",
        "18-24",
        "25-35",
        "25-35",
        "36-50",
        "36-50",
        "+50",
        "+50",
        None,
    ]


def test_join_posts_keeps_posts_present_in_all_three_tables(spark):
    pins = spark.createDataFrame([(1, "a"), (2, "b")], "ind int, unique_id string")
    geos = spark.createDataFrame([(1, "Chad"), (2, "Peru")], "ind int, country string")
    users = spark.createDataFrame([(1, "Ann A")], "ind int, user_name string")
    assertDataFrameEqual(
        A.join_posts(pins, geos, users),
        expect(
            spark,
            [(1, "a", "Chad", "Ann A")],
            "ind int, unique_id string, country string, user_name string",
        ),
    )


def test_answers_registry_follows_the_spec():
    assert list(A.ANSWERS) == [
        "top_category_by_country",
        "top_category_by_year",
        "top_user_by_country",
        "top_country_by_followers",
        "top_category_by_age_group",
        "median_followers_by_age_group",
        "users_joined_by_year",
        "median_followers_by_join_year",
        "median_followers_by_join_year_and_age_group",
    ]
    assert set(A.ELIGIBLE) == set(A.ANSWERS)
