"""The cleaning rules of DATA_SPEC.md section 3, once, for the batch and the speed layer.

Every function here is a pure ``DataFrame -> DataFrame`` transform without actions, so it works
on batch and streaming DataFrames alike (except :func:`deduplicate`, see its docstring)::

    parsed, quarantine = parse_raw(raw, Table.PIN)
    pins = parsed.transform(clean_pins).transform(deduplicate, "unique_id").drop(*ARRIVAL_COLUMNS)

``parse_raw`` takes the lake's raw columns (or a Kafka source's: ``value``, ``timestamp``,
``partition``, ``offset``) and returns the record's fields plus the *arrival columns*
(:data:`ARRIVAL_COLUMNS`: broker time, partition, offset) and the lake partition ``dt`` when
the input has one. The ``clean_*`` functions return the clean columns in the order of the
spec, followed by those carried columns when present, so the last arrival can still be
chosen after cleaning.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from pinpipe.events import CLEAN_COLUMNS, Table, spark_schema
from pinpipe.placeholders import placeholders_of

BROKER_TIMESTAMP = "broker_timestamp"
KAFKA_PARTITION = "kafka_partition"
KAFKA_OFFSET = "kafka_offset"
ARRIVAL_COLUMNS: tuple[str, ...] = (BROKER_TIMESTAMP, KAFKA_PARTITION, KAFKA_OFFSET)
"""Where a record arrived; the last arrival of a natural key wins (section 3)."""
LAKE_PARTITION = "dt"
REASON = "reason"
CARRIED_COLUMNS: tuple[str, ...] = (*ARRIVAL_COLUMNS, LAKE_PARTITION, "value", REASON)
"""Columns that ride along through parse and clean when the input has them: where the record
arrived, its lake partition, and (from :func:`parse_records`) its raw value and rejection reason."""


QUARANTINE_COLUMNS: tuple[str, ...] = ("value", REASON, *ARRIVAL_COLUMNS)

_CORRUPT = "_corrupt_record"
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
"""The 25 code points of Unicode's White_Space property (Java's ``\\p{IsWhite_Space}``): the
no-break spaces and tabs scraped text carries."""
_COUNT = r"^([0-9]+(?:\.[0-9]+)?)([kKmM]?)$"
_ZONE = r"(?i)(z|[+-][0-9]{2}(:?[0-9]{2})?)$"


def parse_records(raw: DataFrame, table: Table) -> DataFrame:
    """Parse the ``value`` JSON of raw records into the fields of ``table``, keeping every row.

    Returns the raw fields (:func:`events.spark_schema`), ``value``, :data:`REASON` and the
    carried columns (:data:`ARRIVAL_COLUMNS`, and the lake partition ``dt`` when the input has
    one). ``reason`` is null for a record that parsed, and says why otherwise: the value is
    null, not UTF-8 (a ``value_bytes`` column holds it), not JSON, not an object of the table's
    field types, or lacks the natural key or row number. One pass and no branch, so a stream
    reads its source once (:func:`parse_raw` splits the result in two).
    """
    table = Table(table)
    schema = spark_schema(table).add(_CORRUPT, "string")
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT}
    text = F.col("value").cast("string")
    decoded = raw.select(
        text.alias("value"),
        F.from_json(text, schema, options).alias("record"),
        *(F.col(name) for name in ("value_bytes", "timestamp", "partition", "offset", LAKE_PARTITION) if name in raw.columns),
    )
    # The reason reads the parsed record by name, from the select above: built from the
    # from_json expression itself, it parsed each value four times (once per reference),
    # since Spark does not share an expression between a CASE's later branches (measured:
    # 50 us against 8 us a pin record).
    value, record = F.col("value"), F.col("record")
    reason = F.when(value.isNull(), F.lit("null value"))
    if "value_bytes" in raw.columns:  # the sink and the source keep non-UTF-8 values as bytes only
        reason = F.when(
            value.isNull() & F.col("value_bytes").isNotNull(), F.lit("value is not UTF-8")
        ).when(value.isNull(), F.lit("null value"))
    reason = reason.when(
        record[_CORRUPT].isNotNull(), F.lit(f"not a JSON object of {table.value} field types")
    )
    for field in dict.fromkeys((table.natural_key, table.row_field)):
        reason = reason.when(record[field].isNull(), F.lit(f"missing {field}"))
    parsed = decoded.select(
        value,
        record,
        F.col("timestamp").cast("timestamp").alias(BROKER_TIMESTAMP),
        F.col("partition").cast("int").alias(KAFKA_PARTITION),
        F.col("offset").cast("long").alias(KAFKA_OFFSET),
        *(F.col(LAKE_PARTITION).cast("string"),) if LAKE_PARTITION in raw.columns else (),
        reason.alias(REASON),
    )
    return parsed.select(
        *(F.col(f"record.{field}").alias(field) for field in table.fields),
        *_carried(parsed),
    )


def parse_raw(raw: DataFrame, table: Table) -> tuple[DataFrame, DataFrame]:
    """Parse the ``value`` JSON of raw records into the fields of ``table``, split in two.

    Returns ``(parsed, quarantine)``: ``parsed`` has the raw fields (:func:`events.spark_schema`)
    plus :data:`ARRIVAL_COLUMNS`; ``quarantine`` has :data:`QUARANTINE_COLUMNS` for every
    record :func:`parse_records` rejects. Each raw row lands in exactly one of the two.
    """
    table = Table(table)
    records = parse_records(raw, table)
    carried = [name for name in _carried(records) if name not in ("value", REASON)]
    good = records.where(F.col(REASON).isNull()).select(*table.fields, *carried)
    quarantine = records.where(F.col(REASON).isNotNull()).select(
        *QUARANTINE_COLUMNS, *(name for name in carried if name not in QUARANTINE_COLUMNS)
    )
    return good, quarantine


def trim_white_space(column: Column | str) -> Column:
    """The text without leading and trailing :data:`WHITE_SPACE`."""
    # btrim scans in from both ends; the regular expression it replaces (^\s+|\s+$ over the
    # White_Space property) tried a match at every character of every value.
    return F.btrim(F.col(column) if isinstance(column, str) else column, F.lit(WHITE_SPACE))


def clean_text(column: Column | str, placeholders: tuple[str, ...] = ()) -> Column:
    """Null for null, empty, whitespace-only or a placeholder (compared trimmed); else as is."""
    value = F.col(column) if isinstance(column, str) else column
    blank = trim_white_space(value).isin("", *placeholders)  # one trim for both tests
    return F.when(value.isNull() | blank, F.lit(None).cast("string")).otherwise(value)


def follower_count(column: Column | str) -> Column:
    """A follower-count spelling as a 64-bit integer: ``437``, ``1.2k`` -> 1200, ``9M``.

    Suffixes ``k``/``K`` (x1,000) and ``M``/``m`` (x1,000,000); fractions round half up.
    Placeholders and anything else unreadable become null.
    """
    text = trim_white_space(clean_text(column, placeholders_of("follower_count")))
    number = F.regexp_extract(text, _COUNT, 1)
    suffix = F.lower(F.regexp_extract(text, _COUNT, 2))
    scale = F.when(suffix == "k", F.lit(1_000)).when(suffix == "m", F.lit(1_000_000)).otherwise(1)
    exact = number.try_cast("decimal(38,6)") * scale
    return F.when(text.rlike(_COUNT), F.round(exact, 0).try_cast("bigint"))


def utc_timestamp(column: Column | str) -> Column:
    """Any wire datetime text (``T`` or space, optional fraction and zone) as a timestamp.

    No zone means UTC, whatever the session time zone; unreadable text becomes null.
    """
    text = trim_white_space(column)
    zoned = F.when(text.rlike(_ZONE), text).otherwise(F.concat(text, F.lit("Z")))
    return zoned.try_cast("timestamp")


def save_path(column: Column | str) -> Column:
    """``Local save in /data/travel`` -> ``/data/travel``; text without the prefix is kept."""
    text = clean_text(column)
    return clean_text(
        F.regexp_replace(text, r"^\p{IsWhite_Space}*Local save in\p{IsWhite_Space}*", "")
    )


def _carried(df: DataFrame) -> list[str]:
    return [name for name in CARRIED_COLUMNS if name in df.columns]


def clean_pins(parsed: DataFrame) -> DataFrame:
    """Raw pin fields -> the clean pin columns (section 3), then any arrival columns."""
    text = {
        name: clean_text(name, placeholders_of(name)).alias(name)
        for name in (
            "unique_id",
            "title",
            "description",
            "poster_name",
            "tag_list",
            "is_image_or_video",
            "image_src",
            "category",
        )
    }
    columns = {
        **text,
        "ind": F.col("index").cast("int").alias("ind"),
        "follower_count": follower_count("follower_count").alias("follower_count"),
        "save_location": save_path("save_location").alias("save_location"),
        "downloaded": F.col("downloaded").cast("int").alias("downloaded"),
    }
    return parsed.select(*(columns[name] for name in CLEAN_COLUMNS[Table.PIN]), *_carried(parsed))


def clean_geo(parsed: DataFrame) -> DataFrame:
    """Raw geo fields -> ``ind, country, coordinates, timestamp``, then any arrival columns.

    ``coordinates`` is ``array<double>`` ``[latitude, longitude]``, null when either is missing.
    """
    latitude, longitude = F.col("latitude").cast("double"), F.col("longitude").cast("double")
    coordinates = F.when(latitude.isNotNull() & longitude.isNotNull(), F.array(latitude, longitude))
    return parsed.select(
        F.col("ind").cast("int").alias("ind"),
        clean_text("country").alias("country"),
        coordinates.alias("coordinates"),
        utc_timestamp("timestamp").alias("timestamp"),
        *_carried(parsed),
    )


def clean_users(parsed: DataFrame) -> DataFrame:
    """Raw user fields -> ``ind, user_name, age, date_joined``, then any arrival columns.

    ``user_name`` is first and last name joined by one space (just the one present when the
    other is missing; null when both are).
    """
    name = F.concat_ws(" ", clean_text("first_name"), clean_text("last_name"))
    return parsed.select(
        F.col("ind").cast("int").alias("ind"),
        clean_text(name).alias("user_name"),
        F.col("age").cast("int").alias("age"),
        utc_timestamp("date_joined").alias("date_joined"),
        *_carried(parsed),
    )


CLEANERS = {Table.PIN: clean_pins, Table.GEO: clean_geo, Table.USER: clean_users}
"""The cleaning function of each table."""


ARRIVAL_RANK = "arrival_rank"


def rank_arrivals(df: DataFrame, key: str | list[str]) -> DataFrame:
    """Add :data:`ARRIVAL_RANK`: 1 for the last arrival of each ``key``, 2 for the one before...

    Order: broker timestamp, then offset, then partition, latest first. Needs the arrival columns.
    """
    keys = [key] if isinstance(key, str) else list(key)
    latest_first = Window.partitionBy(*keys).orderBy(
        *(
            F.col(name).desc_nulls_last()
            for name in (BROKER_TIMESTAMP, KAFKA_OFFSET, KAFKA_PARTITION)
        )
    )
    return df.withColumn(ARRIVAL_RANK, F.row_number().over(latest_first))


def deduplicate(df: DataFrame, key: str | list[str]) -> DataFrame:
    """One row per ``key`` (a column or several): the last arrival wins (section 3).

    Batch only: it ranks with a window function, which Structured Streaming does not support
    on a stream. The speed layer calls it inside ``foreachBatch`` (a micro-batch is a static
    DataFrame) and makes the same choice across micro-batches by upserting on the natural key
    only when the incoming (broker timestamp, offset) is newer than the stored one.
    """
    ranked = rank_arrivals(df, key)
    return ranked.where(F.col(ARRIVAL_RANK) == 1).drop(ARRIVAL_RANK)
