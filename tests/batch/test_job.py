"""The batch job end to end: raw files -> clean -> answers -> quality -> PostgreSQL."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest

from pinpipe.batch import QualityError, run_batch
from pinpipe.batch.answers import ANSWERS
from pinpipe.batch.job import QUALITY_REPORT, read_answers
from pinpipe.batch.quality import TableCounts
from pinpipe.config import Settings
from pinpipe.events import Table
from pinpipe.lakesql import run_sql
from tests.batch.lakes import DAY_1, DAY_2, write_generated_lake
from tests.batch.rawfiles import write_raw
from tests.batch.reference import reference_answers

pytestmark = pytest.mark.integration


def settings_for(lake: Path, dsn: str, **batch) -> Settings:
    return Settings(
        data_dir=lake.parent,
        lake={"root": str(lake)},
        postgres={"dsn": dsn},
        batch={"shuffle_partitions": 2, **batch},
    )


def pin(index: int, uid: str, **fields):
    record = {
        "index": index,
        "unique_id": uid,
        "title": f"t{index}",
        "poster_name": "Ann",
        "follower_count": "10k",
        "category": "art",
        "save_location": "Local save in /data/art",
        "description": "d",
        "tag_list": "x,y",
        "image_src": "https://i.pinimg.com/a.jpg",
        "is_image_or_video": "image",
        "downloaded": 1,
    }
    return record | fields


def geo(ind: int, country: str = "Chad"):
    return {
        "ind": ind,
        "timestamp": datetime(2019, 5, 6, 7, 8, 9),
        "latitude": -1.0,
        "longitude": 2.0,
        "country": country,
    }


def user(ind: int, first: str = "Ann"):
    return {
        "ind": ind,
        "first_name": first,
        "last_name": "Lee",
        "age": 30,
        "date_joined": datetime(2016, 1, 2, 3, 4, 5),
    }


def write_small_lake(lake: Path) -> None:
    """Three posts; pin "b" sent twice (the later one says 20k), one unparseable pin."""
    write_raw(lake, Table.PIN, [pin(1, "a"), pin(2, "b", follower_count="5k"), "{oops"])
    write_raw(
        lake,
        Table.PIN,
        [pin(2, "b", follower_count="20k"), pin(3, "c", category="travel")],
        partition=1,
        first_offset=100,
    )
    write_raw(lake, Table.GEO, [geo(1), geo(2), geo(3, "Peru")])
    write_raw(lake, Table.USER, [user(1), user(2, "Bo"), user(3, "Cy"), user(3, "Cy")])


def pg_rows(dsn: str, name: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return sorted(conn.execute(f"SELECT * FROM pinpipe.{name}").fetchall())


def test_small_lake_counts_clean_tables_and_answers(spark, traversable_dir, pg_dsn):
    lake = traversable_dir / "lake"
    write_small_lake(lake)
    settings = settings_for(lake, pg_dsn)

    result = run_batch(settings, dates=[date(2024, 3, 1)], spark=spark)

    assert result.tables == [
        TableCounts("pin", raw=5, quarantined=1, duplicates=1, clean=3),
        TableCounts("geo", raw=3, quarantined=0, duplicates=0, clean=3),
        TableCounts("user", raw=4, quarantined=0, duplicates=1, clean=3),
    ]
    assert result.report.passed
    pins = spark.read.parquet(str(lake / "clean" / "pin"))
    assert sorted((r.unique_id, r.follower_count, r.save_location) for r in pins.collect()) == [
        ("a", 10_000, "/data/art"),
        ("b", 20_000, "/data/art"),
        ("c", 10_000, "/data/art"),
    ]
    quarantine = spark.read.parquet(str(lake / "quarantine" / "pin")).collect()
    assert [(q.value, q.reason) for q in quarantine] == [
        ("{oops", "not a JSON object of pin field types")
    ]
    assert pg_rows(pg_dsn, "top_category_by_country") == [("Chad", "art", 2), ("Peru", "travel", 1)]
    assert pg_rows(pg_dsn, "top_country_by_followers") == [("Chad", 20_000)]
    assert pg_rows(pg_dsn, "users_joined_by_year") == [(2016, 3)]
    report = json.loads((lake / "answers" / QUALITY_REPORT).read_text())
    assert report["passed"] is True
    assert run_sql(settings, "SELECT count(*) FROM posts").rows == [(3,)]
    assert run_sql(settings, "SELECT * FROM top_country_by_followers").rows == [("Chad", 20_000)]


def test_a_failed_quality_check_fails_the_run_and_publishes_nothing(spark, traversable_dir, pg_dsn):
    lake = traversable_dir / "lake"
    write_raw(lake, Table.PIN, [pin(1, "a", title="  "), pin(2, "b")])  # one null title
    write_raw(lake, Table.GEO, [geo(1), geo(2)])
    write_raw(lake, Table.USER, [user(1), user(2)])
    settings = settings_for(lake, pg_dsn, max_null_rate={"pin.title": 0.1})
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS pinpipe")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS pinpipe.users_joined_by_year "
            "(post_year integer, number_users_joined bigint)"
        )
        before = conn.execute("SELECT * FROM pinpipe.users_joined_by_year").fetchall()

    with pytest.raises(QualityError) as failure:
        run_batch(settings, all_dates=True, spark=spark)

    assert [c.name for c in failure.value.report.failures] == ["pin.title.null_rate"]
    assert "1/2 = 0.5000 (max 0.1)" in str(failure.value)
    report = json.loads((lake / "answers" / QUALITY_REPORT).read_text())
    assert report["passed"] is False
    assert pg_rows(pg_dsn, "users_joined_by_year") == sorted(before)


def test_generated_lake_matches_duckdb_and_reruns_identically(spark, traversable_dir, pg_dsn):
    lake = traversable_dir / "lake"
    raw_counts = write_generated_lake(lake, rows=1500)
    settings = settings_for(lake, pg_dsn)
    dates = [date.fromisoformat(DAY_1), date.fromisoformat(DAY_2)]

    first = run_batch(settings, dates=dates, spark=spark)

    assert {t.table: t.raw for t in first.tables} == raw_counts
    assert [t.quarantined for t in first.tables] == [0, 3, 0]
    assert first.report.passed, first.report.failures
    answers = read_answers(settings)
    expected = reference_answers(lake)
    for name in ANSWERS:
        rows = rounded(tuple(r.values()) for r in answers[name].to_pylist())
        assert rows, name
        assert rows == rounded(expected[name]), name
        assert rounded(pg_rows(pg_dsn, name)) == rows, name

    clean_before = {t.value: _clean_snapshot(lake, t.value) for t in Table}
    second = run_batch(settings, dates=dates, spark=spark)
    assert second.tables == first.tables
    assert {t.value: _clean_snapshot(lake, t.value) for t in Table} == clean_before
    assert read_answers(settings) == answers


def rounded(rows) -> list[tuple]:
    """Rows sorted, floats to 9 decimals (medians: two engines, the same exact arithmetic)."""
    return sorted(tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in rows)


def _clean_snapshot(lake: Path, table: str) -> list[tuple]:
    rows = pq.read_table(lake / "clean" / table).to_pylist()
    return sorted(tuple(str(v) for v in row.values()) for row in rows)
