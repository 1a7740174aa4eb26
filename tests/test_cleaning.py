"""The cleaning rules of DATA_SPEC.md section 3, one hand-written case at a time."""

from __future__ import annotations

from datetime import datetime

import pytest
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from pinpipe.cleaning import (
    CLEAN_COLUMNS,
    WHITE_SPACE,
    clean_geo,
    clean_pins,
    clean_users,
    deduplicate,
    follower_count,
    parse_raw,
    trim_white_space,
    utc_timestamp,
)
from pinpipe.events import Table, spark_schema
from tests.batch.rawfiles import write_raw

pytestmark = pytest.mark.integration


RAW = "value string, timestamp timestamp, partition int, offset long"
T0 = datetime(2024, 3, 1, 12, 0, 0)
STORY = "No description available Story format"
NO_TAGS = "N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e"


def pins(spark, rows):
    return spark.createDataFrame(rows, spark_schema(Table.PIN))


def test_parse_raw_splits_good_records_from_quarantine(spark):
    raw = spark.createDataFrame(
        [
            (
                (
                    '{"ind": 7, "timestamp": "2020-08-28T03:52:47Z", "latitude": -1.5, '
                    '"longitude": 2.25, "country": "Chad", "extra": true}'
                ),
                T0,
                0,
                10,
            ),
            ("not json at all", T0, 0, 11),
            ('{"ind": "7", "country": "Chad"}', T0, 1, 12),
            ('{"country": "Chad"}', T0, 1, 13),
            (None, T0, 2, 14),
        ],
        RAW,
    )
    parsed, quarantine = parse_raw(raw, Table.GEO)

    expected = spark.createDataFrame(
        [(7, "2020-08-28T03:52:47Z", -1.5, 2.25, "Chad", T0, 0, 10)],
        "ind int, timestamp string, latitude double, longitude double, country string, "
        "broker_timestamp timestamp, kafka_partition int, kafka_offset long",
    )
    assertDataFrameEqual(parsed, expected)
    assertDataFrameEqual(
        quarantine,
        spark.createDataFrame(
            [
                ("not json at all", "not a JSON object of geo field types", T0, 0, 11),
                (
                    '{"ind": "7", "country": "Chad"}',
                    "not a JSON object of geo field types",
                    T0,
                    1,
                    12,
                ),
                ('{"country": "Chad"}', "missing ind", T0, 1, 13),
                (None, "null value", T0, 2, 14),
            ],
            "value string, reason string, broker_timestamp timestamp, kafka_partition int, "
            "kafka_offset long",
        ),
    )


def test_parse_raw_reads_the_sinks_value_bytes_column(spark):
    """The lake sink keeps a non-UTF-8 value only in ``value_bytes`` (``value`` null)."""
    raw = spark.createDataFrame(
        [
            ('{"ind": 1, "first_name": "Ann"}', None, T0, 0, 0),
            (None, bytearray(b"\xff\xfe"), T0, 0, 1),
            (None, None, T0, 0, 2),
        ],
        "value string, value_bytes binary, timestamp timestamp, partition int, offset long",
    )
    parsed, quarantine = parse_raw(raw, Table.USER)
    assert [(row.ind, row.first_name) for row in parsed.collect()] == [(1, "Ann")]
    assert sorted((row.kafka_offset, row.reason) for row in quarantine.collect()) == [
        (1, "value is not UTF-8"),
        (2, "null value"),
    ]


def test_parse_raw_reads_a_number_sent_as_follower_count_as_text(spark):
    raw = spark.createDataFrame(
        [('{"index": 3, "unique_id": "u3", "follower_count": 437}', T0, 0, 0)], RAW
    )
    parsed, quarantine = parse_raw(raw, Table.PIN)
    assert parsed.select("index", "unique_id", "follower_count").collect() == [(3, "u3", "437")]
    assert quarantine.count() == 0


def test_parse_raw_quarantines_a_pin_without_unique_id(spark):
    raw = spark.createDataFrame([('{"index": 3, "title": "t"}', T0, 0, 0)], RAW)
    _, quarantine = parse_raw(raw, Table.PIN)
    assert [row.reason for row in quarantine.collect()] == ["missing unique_id"]


def test_white_space_is_javas_white_space_property(spark):
    # Java's regular expressions define the set the rules were written against; ask them
    # about every code point of the Basic Multilingual Plane (surrogates excluded).
    from pyspark.sql import functions as F

    chars = spark.createDataFrame(
        [(chr(c),) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF], "c string"
    )
    java = {row.c for row in chars.where(F.col("c").rlike(r"^\p{IsWhite_Space}$")).collect()}
    assert java == set(WHITE_SPACE)
    assert len(WHITE_SPACE) == 25


def test_trim_white_space_trims_only_the_ends(spark):
    texts = ["\u00a0\u3000 a\u2028b \t\n", "\u2009", "x", "", None]
    df = spark.createDataFrame([(t,) for t in texts], "t string")
    got = [row.trimmed for row in df.select(trim_white_space("t").alias("trimmed")).collect()]
    assert got == ["a\u2028b", "", "x", "", None]


def test_clean_pins_nulls_placeholders_and_blanks_and_keeps_other_text(spark):
    parsed = pins(
        spark,
        [
            (
                1,
                "a",
                "Cute cats 🐱",
                STORY,
                "User Info Error",
                "26k",
                NO_TAGS,
                "image",
                "Image src error.",
                1,
                "Local save in /data/art",
                "art",
            ),
            (
                2,
                "b",
                "  No Title Data Available\n",
                " Untitled ",
                "Ана Иванова",
                "1.2k",
                "Watercolor,Sketchbook",
                "video",
                "https://i.pinimg.com/x.jpg",
                0,
                "Local save in /data/home-decor",
                "home-decor",
            ),
            (
                3,
                "c",
                " ",
                "\u00a0Text with nbsp\u00a0…",
                "",
                "437",
                None,
                None,
                None,
                None,
                None,
                "travel",
            ),
            (
                4,
                "d",
                "\t",
                "No description available",
                "Ann | Art Ideas",
                "User Info Error",
                "  ",
                "multi-video(story page format)",
                "",
                1,
                "Local save in /data/travel",
                "travel",
            ),
        ],
    )
    expected = spark.createDataFrame(
        [
            (
                1,
                "a",
                "Cute cats 🐱",
                None,
                26_000,
                None,
                None,
                "image",
                None,
                "/data/art",
                "art",
                1,
            ),
            (
                2,
                "b",
                None,
                None,
                1_200,
                "Ана Иванова",
                "Watercolor,Sketchbook",
                "video",
                "https://i.pinimg.com/x.jpg",
                "/data/home-decor",
                "home-decor",
                0,
            ),
            (
                3,
                "c",
                None,
                "\u00a0Text with nbsp\u00a0…",
                437,
                None,
                None,
                None,
                None,
                None,
                "travel",
                None,
            ),
            (
                4,
                "d",
                None,
                None,
                None,
                "Ann | Art Ideas",
                None,
                "multi-video(story page format)",
                None,
                "/data/travel",
                "travel",
                1,
            ),
        ],
        "ind int, unique_id string, title string, description string, follower_count bigint, "
        "poster_name string, tag_list string, is_image_or_video string, image_src string, "
        "save_location string, category string, downloaded int",
    )
    cleaned = clean_pins(parsed)
    assert tuple(cleaned.columns) == CLEAN_COLUMNS[Table.PIN]
    assertDataFrameEqual(cleaned, expected, checkRowOrder=False)


def test_follower_count_spellings(spark):
    spellings = [
        "437",
        "26k",
        "892k",
        "1M",
        "0",
        "1.2k",
        "2.5M",
        " 12k ",
        "3000000000",
        "User Info Error",
        "abc",
        "",
        None,
    ]
    df = spark.createDataFrame([(s,) for s in spellings], "raw string")
    result = df.select("raw", follower_count("raw").alias("count"))
    assert result.schema["count"].dataType == T.LongType()
    assertDataFrameEqual(
        result,
        spark.createDataFrame(
            [
                ("437", 437),
                ("26k", 26_000),
                ("892k", 892_000),
                ("1M", 1_000_000),
                ("0", 0),
                ("1.2k", 1_200),
                ("2.5M", 2_500_000),
                (" 12k ", 12_000),
                ("3000000000", 3_000_000_000),
                ("User Info Error", None),
                ("abc", None),
                ("", None),
                (None, None),
            ],
            "raw string, count bigint",
        ),
    )


def test_timestamps_accept_every_wire_serialisation_as_utc(spark):
    texts = [
        "2020-08-28T03:52:47Z",
        "2020-08-28T03:52:47",
        "2020-08-28 03:52:47",
        "2020-08-28T05:52:47.250000+02:00",
        "garbage",
        None,
    ]
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")  # no zone still means UTC
    try:
        df = spark.createDataFrame([(t,) for t in texts], "raw string")
        epoch = [
            row.s for row in df.select(utc_timestamp("raw").cast("double").alias("s")).collect()
        ]
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
    utc = 1598586767.0  # 2020-08-28T03:52:47Z
    assert epoch == [utc, utc, utc, utc + 0.25, None, None]


def test_clean_geo_makes_coordinates_and_timestamps(spark):
    parsed = spark.createDataFrame(
        [
            (1, "2020-08-28T03:52:47Z", -12.5, 100.25, "Cote d'Ivoire"),
            (2, "2019-01-02 03:04:05", 45.0, -0.5, "Antarctica (the territory South of 60 deg S)"),
            (3, "2021-06-30T23:00:00.500000-01:00", 1.0, None, "  "),
            (4, None, None, None, None),
        ],
        spark_schema(Table.GEO),
    )
    expected = spark.createDataFrame(
        [
            (1, "Cote d'Ivoire", [-12.5, 100.25], datetime(2020, 8, 28, 3, 52, 47)),
            (
                2,
                "Antarctica (the territory South of 60 deg S)",
                [45.0, -0.5],
                datetime(2019, 1, 2, 3, 4, 5),
            ),
            (3, None, None, datetime(2021, 7, 1, 0, 0, 0, 500_000)),
            (4, None, None, None),
        ],
        "ind int, country string, coordinates array<double>, timestamp timestamp",
    )
    assertDataFrameEqual(clean_geo(parsed), expected, checkRowOrder=False)
    assert tuple(clean_geo(parsed).columns) == CLEAN_COLUMNS[Table.GEO]


def test_clean_users_joins_names_and_types_columns(spark):
    parsed = spark.createDataFrame(
        [
            (1, "Ana", "Lopez", 20, "2015-03-04T05:06:07Z"),
            (2, "Bob", None, 40, "2016-01-01 00:00:00"),
            (3, None, "  ", None, None),
            (4, "Zoë", "O'Neil-Ивanova", 51, "2017-12-31T23:59:59Z"),
        ],
        spark_schema(Table.USER),
    )
    expected = spark.createDataFrame(
        [
            (1, "Ana Lopez", 20, datetime(2015, 3, 4, 5, 6, 7)),
            (2, "Bob", 40, datetime(2016, 1, 1)),
            (3, None, None, None),
            (4, "Zoë O'Neil-Ивanova", 51, datetime(2017, 12, 31, 23, 59, 59)),
        ],
        "ind int, user_name string, age int, date_joined timestamp",
    )
    assertDataFrameEqual(clean_users(parsed), expected, checkRowOrder=False)


def test_deduplicate_keeps_the_last_arrival(spark):
    t1, t2 = datetime(2024, 3, 1, 10), datetime(2024, 3, 1, 11)
    rows = spark.createDataFrame(
        [
            ("a", "first", t1, 0, 50),  # later offset, earlier broker time: loses
            ("a", "second", t2, 1, 3),
            ("b", "old", t1, 0, 7),
            ("b", "new", t1, 0, 9),  # same time: the higher offset wins
            ("c", "only", t1, 2, 1),
        ],
        "unique_id string, title string, broker_timestamp timestamp, kafka_partition int, "
        "kafka_offset long",
    )
    assertDataFrameEqual(
        deduplicate(rows, "unique_id").select("unique_id", "title"),
        spark.createDataFrame(
            [("a", "second"), ("b", "new"), ("c", "only")], "unique_id string, title string"
        ),
    )


def test_cleaning_runs_on_a_stream(spark, tmp_path):
    """No actions inside: parse, clean and carry the arrival columns on a streaming frame."""
    write_raw(
        tmp_path,
        Table.USER,
        [
            {
                "ind": 1,
                "first_name": "Ana",
                "last_name": "Lopez",
                "age": 20,
                "date_joined": datetime(2015, 3, 4, 5, 6, 7),
            },
            "{broken",
        ],
    )
    raw_schema = spark.read.parquet(str(tmp_path / "raw" / "user")).schema
    stream = spark.readStream.schema(raw_schema).parquet(str(tmp_path / "raw" / "user"))
    parsed, quarantine = parse_raw(stream, Table.USER)
    cleaned = clean_users(parsed)
    assert cleaned.isStreaming and quarantine.isStreaming
    query = (
        cleaned.writeStream.format("memory")
        .queryName("clean_users_stream")
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination(60)
    result = spark.sql(
        "SELECT ind, user_name, age, date_joined, kafka_offset FROM clean_users_stream"
    )
    assertDataFrameEqual(
        result,
        spark.createDataFrame(
            [(1, "Ana Lopez", 20, datetime(2015, 3, 4, 5, 6, 7), 0)],
            "ind int, user_name string, age int, date_joined timestamp, kafka_offset long",
        ),
    )
