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

The rules themselves are column expressions (:func:`clean_columns`, :func:`json_record`,
:func:`rejection_reason`): the ``clean_*`` functions apply them to a parsed DataFrame, and the
stream job to the records of all three topics in one pass (:func:`pinpipe.speed.job.tag_outputs`).
"""

from __future__ import annotations

from collections.abc import Callable

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


def json_record(text: Column, table: Table) -> Column:
    """``text`` parsed as a JSON object of ``table``'s fields (a struct), plus a corrupt-record field.

    Reference the result by name from a later ``select`` (as :func:`parse_records` does), never
    by this expression: Spark does not share an expression between the later branches of a
    CASE, so each reference to it would parse the value again (measured: 50 us a pin record
    with the reason built from it, against 15 us).
    """
    schema = spark_schema(Table(table)).add(_CORRUPT, "string")
    return F.from_json(text, schema, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT})


def rejection_reason(value: Column, record: Column, table: Table, value_bytes: Column | None = None) -> Column:
    """Why a record is rejected, or null: from its text ``value`` and :func:`json_record` ``record``.

    The value is null, not UTF-8 (``value_bytes``, when given, holds such a value), not JSON,
    not an object of the table's field types, or lacks the natural key or row number.
    """
    table = Table(table)
    reason = F.when(value.isNull(), F.lit("null value"))
    if value_bytes is not None:  # the sink and the source keep non-UTF-8 values as bytes only
        reason = F.when(value.isNull() & value_bytes.isNotNull(), F.lit("value is not UTF-8")).when(
            value.isNull(), F.lit("null value")
        )
    reason = reason.when(
        record[_CORRUPT].isNotNull(), F.lit(f"not a JSON object of {table.value} field types")
    )
    for field in dict.fromkeys((table.natural_key, table.row_field)):
        reason = reason.when(record[field].isNull(), F.lit(f"missing {field}"))
    return reason


def parse_records(raw: DataFrame, table: Table) -> DataFrame:
    """Parse the ``value`` JSON of raw records into the fields of ``table``, keeping every row.

    Returns the raw fields (:func:`events.spark_schema`), ``value``, :data:`REASON` and the
    carried columns (:data:`ARRIVAL_COLUMNS`, and the lake partition ``dt`` when the input has
    one). ``reason`` is null for a record that parsed, and says why otherwise
    (:func:`rejection_reason`). One pass and no branch (:func:`parse_raw` splits the result in two).
    """
    table = Table(table)
    text = F.col("value").cast("string")
    has_bytes = "value_bytes" in raw.columns
    decoded = raw.select(
        text.alias("value"),
        json_record(text, table).alias("record"),
        *(F.col(name) for name in ("value_bytes", "timestamp", "partition", "offset", LAKE_PARTITION) if name in raw.columns),
    )
    value, record = F.col("value"), F.col("record")
    parsed = decoded.select(
        value,
        record,
        *arrival_columns(),
        *(F.col(LAKE_PARTITION).cast("string"),) if LAKE_PARTITION in raw.columns else (),
        rejection_reason(value, record, table, F.col("value_bytes") if has_bytes else None).alias(REASON),
    )
    return parsed.select(
        *(F.col(f"record.{field}").alias(field) for field in table.fields),
        *_carried(parsed),
    )


def arrival_columns() -> list[Column]:
    """:data:`ARRIVAL_COLUMNS` from a Kafka record's (or the lake's) ``timestamp``, ``partition``, ``offset``."""
    return [
        F.col("timestamp").cast("timestamp").alias(BROKER_TIMESTAMP),
        F.col("partition").cast("int").alias(KAFKA_PARTITION),
        F.col("offset").cast("long").alias(KAFKA_OFFSET),
    ]


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


Field = Callable[[str], Column]
"""How a cleaning rule reads a raw field: its name -> the column (``F.col`` for a parsed DataFrame)."""


def pin_columns(field: Field = F.col) -> dict[str, Column]:
    """The clean pin columns (section 3) as expressions over the raw pin fields."""
    text = {
        name: clean_text(field(name), placeholders_of(name))
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
    return {
        **text,
        "ind": field("index").cast("int"),
        "follower_count": follower_count(field("follower_count")),
        "save_location": save_path(field("save_location")),
        "downloaded": field("downloaded").cast("int"),
    }


def geo_columns(field: Field = F.col) -> dict[str, Column]:
    """``ind, country, coordinates, timestamp`` as expressions over the raw geo fields.

    ``coordinates`` is ``array<double>`` ``[latitude, longitude]``, null when either is missing.
    """
    latitude, longitude = field("latitude").cast("double"), field("longitude").cast("double")
    return {
        "ind": field("ind").cast("int"),
        "country": clean_text(field("country")),
        "coordinates": F.when(latitude.isNotNull() & longitude.isNotNull(), F.array(latitude, longitude)),
        "timestamp": utc_timestamp(field("timestamp")),
    }


def user_columns(field: Field = F.col) -> dict[str, Column]:
    """``ind, user_name, age, date_joined`` as expressions over the raw user fields.

    ``user_name`` is first and last name joined by one space (just the one present when the
    other is missing; null when both are).
    """
    name = F.concat_ws(" ", clean_text(field("first_name")), clean_text(field("last_name")))
    return {
        "ind": field("ind").cast("int"),
        "user_name": clean_text(name),
        "age": field("age").cast("int"),
        "date_joined": utc_timestamp(field("date_joined")),
    }


COLUMN_RULES: dict[Table, Callable[[Field], dict[str, Column]]] = {
    Table.PIN: pin_columns,
    Table.GEO: geo_columns,
    Table.USER: user_columns,
}
"""Each table's cleaning rules, column by column: the one definition both layers apply."""


def clean_columns(table: Table, field: Field = F.col) -> dict[str, Column]:
    """The clean columns of ``table`` (name -> expression), in the spec's order, read through ``field``."""
    rules = COLUMN_RULES[Table(table)](field)
    return {name: rules[name] for name in CLEAN_COLUMNS[Table(table)]}


def _clean(parsed: DataFrame, table: Table) -> DataFrame:
    columns = clean_columns(table)
    return parsed.select(*(rule.alias(name) for name, rule in columns.items()), *_carried(parsed))


def clean_pins(parsed: DataFrame) -> DataFrame:
    """Raw pin fields -> the clean pin columns (section 3), then any arrival columns."""
    return _clean(parsed, Table.PIN)


def clean_geo(parsed: DataFrame) -> DataFrame:
    """Raw geo fields -> ``ind, country, coordinates, timestamp``, then any arrival columns."""
    return _clean(parsed, Table.GEO)


def clean_users(parsed: DataFrame) -> DataFrame:
    """Raw user fields -> ``ind, user_name, age, date_joined``, then any arrival columns."""
    return _clean(parsed, Table.USER)


CLEANERS = {Table.PIN: clean_pins, Table.GEO: clean_geo, Table.USER: clean_users}
"""The cleaning function of each table (on a parsed DataFrame)."""


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
