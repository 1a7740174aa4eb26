"""The generated tables against DATA_SPEC.md section 1. Expected values are written by hand."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime

import pytest

from pinpipe.events import RAW_FIELDS, Table
from pinpipe.source.generator import generate_tables
from pinpipe.source.tables import SourceTables

ROWS = 11_154  # the size of the original source, which the documented frequencies refer to


@pytest.fixture(scope="module")
def tables() -> SourceTables:
    return generate_tables(seed=42, rows=ROWS)


def count(rows: list[dict], field: str, value: object) -> int:
    return sum(1 for row in rows if row[field] == value)


def test_same_seed_gives_identical_tables() -> None:
    assert generate_tables(seed=7, rows=300) == generate_tables(seed=7, rows=300)


def test_other_seed_gives_other_tables() -> None:
    first, second = generate_tables(seed=7, rows=300), generate_tables(seed=8, rows=300)
    assert first.pin != second.pin
    assert first.geo != second.geo
    assert first.user != second.user


def test_generation_leaves_global_random_state_alone() -> None:
    import random

    random.seed(123)
    expected = random.random()
    random.seed(123)
    generate_tables(seed=1, rows=50)
    assert random.random() == expected


def test_row_count_and_shared_row_numbers(tables: SourceTables) -> None:
    assert len(tables) == ROWS
    assert len(tables.pin) == len(tables.geo) == len(tables.user) == ROWS
    row_numbers = [row["index"] for row in tables.pin]
    assert len(set(row_numbers)) == ROWS
    assert [row["ind"] for row in tables.geo] == row_numbers
    assert [row["ind"] for row in tables.user] == row_numbers


def test_small_table_has_requested_rows() -> None:
    assert len(generate_tables(rows=25)) == 25
    assert len(generate_tables(rows=0)) == 0


def test_rows_and_post_accessors(tables: SourceTables) -> None:
    assert tables.rows(Table.GEO) is tables.geo
    post = tables.post(5)
    assert post[Table.PIN] is tables.pin[5]
    assert post[Table.GEO]["ind"] == post[Table.USER]["ind"] == post[Table.PIN]["index"]


@pytest.mark.parametrize("table", list(Table))
def test_keys_are_raw_fields_in_order(tables: SourceTables, table: Table) -> None:
    assert all(tuple(row) == RAW_FIELDS[table] for row in tables.rows(table))


def test_raw_python_types(tables: SourceTables) -> None:
    for pin in tables.pin:
        assert type(pin["index"]) is int and type(pin["downloaded"]) is int
        assert isinstance(pin["follower_count"], str)
        for field in ("unique_id", "title", "description", "poster_name", "tag_list",
                      "save_location", "category"):  # fmt: skip
            assert isinstance(pin[field], str), field
        assert pin["is_image_or_video"] is None or isinstance(pin["is_image_or_video"], str)
        assert pin["image_src"] is None or isinstance(pin["image_src"], str)
    for geo in tables.geo:
        assert type(geo["ind"]) is int and isinstance(geo["country"], str)
        assert type(geo["latitude"]) is float and type(geo["longitude"]) is float
        assert type(geo["timestamp"]) is datetime and geo["timestamp"].tzinfo is None
        assert geo["timestamp"].microsecond == 0
    for user in tables.user:
        assert type(user["ind"]) is int and type(user["age"]) is int
        assert isinstance(user["first_name"], str) and isinstance(user["last_name"], str)
        assert type(user["date_joined"]) is datetime and user["date_joined"].tzinfo is None


def test_unique_ids_are_distinct_uuid4(tables: SourceTables) -> None:
    uuid4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    ids = [row["unique_id"] for row in tables.pin]
    assert all(uuid4.match(unique_id) for unique_id in ids)
    assert len(set(ids)) == ROWS


def test_thirteen_near_uniform_categories(tables: SourceTables) -> None:
    categories = Counter(row["category"] for row in tables.pin)
    assert set(categories) == {
        "christmas", "tattoos", "quotes", "art", "education", "home-decor", "travel",
        "mens-fashion", "vehicles", "diy-and-crafts", "finance", "event-planning", "beauty",
    }  # fmt: skip
    assert all(600 <= n <= 1100 for n in categories.values()), categories


def test_save_location_names_the_category(tables: SourceTables) -> None:
    assert all(
        row["save_location"] == f"Local save in /data/{row['category']}" for row in tables.pin
    )


def test_media_mix(tables: SourceTables) -> None:
    media = Counter(row["is_image_or_video"] for row in tables.pin)
    assert set(media) == {"image", "multi-video(story page format)", "video", None}
    assert 0.85 * ROWS <= media["image"] <= 0.93 * ROWS
    assert 0.05 * ROWS <= media["multi-video(story page format)"] <= 0.11 * ROWS
    assert 0.015 * ROWS <= media["video"] <= 0.05 * ROWS
    assert 1 <= media[None] <= 30


def test_mostly_downloaded(tables: SourceTables) -> None:
    assert {row["downloaded"] for row in tables.pin} == {0, 1}
    assert 0.94 * ROWS <= count(tables.pin, "downloaded", 1) <= 0.99 * ROWS


@pytest.mark.parametrize(
    ("field", "placeholder", "low", "high"),
    [
        ("description", "No description available Story format", 750, 1050),  # 895
        ("description", "No description available", 130, 240),  # 182
        ("description", "Untitled", 1, 120),  # "sometimes"
        ("title", "No Title Data Available", 60, 120),  # 88
        ("poster_name", "User Info Error", 60, 120),  # 88
        ("follower_count", "User Info Error", 60, 120),
        ("tag_list", "N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e", 120, 230),  # 171
        ("image_src", "Image src error.", 260, 390),  # 323
        ("image_src", None, 1, 20),  # 7
    ],
)
def test_placeholder_frequencies(
    tables: SourceTables, field: str, placeholder: str | None, low: int, high: int
) -> None:
    assert low <= count(tables.pin, field, placeholder) <= high


def test_story_posts_with_every_text_field_a_placeholder(tables: SourceTables) -> None:
    all_placeholders = {
        "description": "No description available Story format",
        "title": "No Title Data Available",
        "poster_name": "User Info Error",
        "follower_count": "User Info Error",
        "tag_list": "N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e",
        "image_src": "Image src error.",
    }
    broken = [
        row for row in tables.pin
        if all(row[field] == value for field, value in all_placeholders.items())
    ]  # fmt: skip
    assert 40 <= len(broken) <= 120
    assert all(row["is_image_or_video"] == "multi-video(story page format)" for row in broken)


def test_story_format_description_belongs_to_story_posts(tables: SourceTables) -> None:
    for row in tables.pin:
        if row["description"] == "No description available Story format":
            assert row["is_image_or_video"] == "multi-video(story page format)"


def test_every_follower_count_spelling(tables: SourceTables) -> None:
    spellings = Counter()
    for value in (row["follower_count"] for row in tables.pin):
        if value == "User Info Error":
            spellings["placeholder"] += 1
        elif value == "0":
            spellings["zero"] += 1
        elif re.fullmatch(r"[1-9]\d{0,2}", value):
            spellings["plain"] += 1
        elif re.fullmatch(r"[1-9]\d{0,2}k", value):
            spellings["k"] += 1
        elif re.fullmatch(r"\d\.\dk", value):
            spellings["decimal k"] += 1
        elif re.fullmatch(r"[1-9]\d?M", value):
            spellings["M"] += 1
        else:
            pytest.fail(f"unexpected follower_count {value!r}")
    assert set(spellings) == {"placeholder", "zero", "plain", "k", "decimal k", "M"}
    assert spellings["k"] > spellings["M"]


def test_tag_lists_and_image_urls(tables: SourceTables) -> None:
    url = re.compile(
        r"^https://i\.pinimg\.com/originals/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{32}\.(jpg|png)$"
    )
    ordinary = [row for row in tables.pin if row["image_src"] not in (None, "Image src error.")]
    assert all(url.match(row["image_src"]) for row in ordinary)
    assert any("," in row["tag_list"] for row in tables.pin)


def test_real_world_text(tables: SourceTables) -> None:
    text = [row[field] for row in tables.pin for field in ("title", "description")]
    joined = "\n".join(text)
    assert re.search("[А-Яа-я]", joined), "Cyrillic"
    assert re.search("[\u3040-\u30ff]", joined), "Japanese kana"
    assert re.search("[\U0001f300-\U0001faff]", joined), "emoji"
    assert "…" in joined
    assert "\u00a0" in joined
    assert any(value != value.strip() and value.strip() for value in text), "padded text"
    assert any(not value.strip() for value in text), "empty or whitespace-only text"


def test_geo_ranges(tables: SourceTables) -> None:
    assert all(
        datetime(2017, 1, 1) <= row["timestamp"] < datetime(2023, 1, 1) for row in tables.geo
    )
    assert {row["timestamp"].year for row in tables.geo} == {2017, 2018, 2019, 2020, 2021, 2022}
    assert all(-90 <= row["latitude"] <= 90 for row in tables.geo)
    assert all(-180 <= row["longitude"] <= 180 for row in tables.geo)
    assert sum(1 for row in tables.geo if row["latitude"] < 0) > ROWS / 2  # mostly negative


def test_faker_style_countries(tables: SourceTables) -> None:
    countries = {row["country"] for row in tables.geo}
    assert {
        "Antarctica (the territory South of 60 deg S)",
        "Cote d'Ivoire",
        "Cocos (Keeling) Islands",
    } <= countries
    assert len(countries) > 100


def test_user_ranges(tables: SourceTables) -> None:
    assert all(18 <= row["age"] <= 75 for row in tables.user)
    ages = {row["age"] for row in tables.user}
    assert {18, 24, 25, 35, 36, 50, 51} <= ages  # every age group's edges occur
    assert all(
        datetime(2015, 1, 1) <= row["date_joined"] < datetime(2018, 1, 1) for row in tables.user
    )
    assert {row["date_joined"].year for row in tables.user} == {2015, 2016, 2017}


def test_same_person_under_several_row_numbers(tables: SourceTables) -> None:
    people = Counter(
        (row["first_name"], row["last_name"], row["date_joined"]) for row in tables.user
    )
    repeated = [person for person, n in people.items() if n > 1]
    assert len(repeated) > 500
    assert len(people) < 0.9 * ROWS
    # A repeated person posts from the same account.
    (first, last, joined), *_ = repeated
    accounts = {
        pin["poster_name"]
        for pin, user in zip(tables.pin, tables.user)
        if (user["first_name"], user["last_name"], user["date_joined"]) == (first, last, joined)
    }
    assert len(accounts - {"User Info Error"}) == 1
