"""The record contracts: the three source tables, their topics and natural keys.

DATA_SPEC.md section 1 is the source of truth; this module is its single translation into
code. Spark schemas for the same records are added beside these when the batch layer lands.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class Table(str, enum.Enum):
    """One of the three source tables; its value is the topic suffix."""

    PIN = "pin"
    GEO = "geo"
    USER = "user"

    @property
    def natural_key(self) -> str:
        """The field identifying one record of this table (the Kafka key)."""
        return "unique_id" if self is Table.PIN else "ind"

    @property
    def row_field(self) -> str:
        """The field holding the source row number, shared across the three tables."""
        return "index" if self is Table.PIN else "ind"

    @property
    def fields(self) -> tuple[str, ...]:
        """Raw field names in the source database's column order."""
        return RAW_FIELDS[self]


RAW_FIELDS: dict[Table, tuple[str, ...]] = {
    Table.PIN: (
        "index",
        "unique_id",
        "title",
        "description",
        "poster_name",
        "follower_count",
        "tag_list",
        "is_image_or_video",
        "image_src",
        "downloaded",
        "save_location",
        "category",
    ),
    Table.GEO: ("ind", "timestamp", "latitude", "longitude", "country"),
    Table.USER: ("ind", "first_name", "last_name", "age", "date_joined"),
}

CLEAN_COLUMNS: dict[Table, tuple[str, ...]] = {
    Table.PIN: (
        "ind",
        "unique_id",
        "title",
        "description",
        "follower_count",
        "poster_name",
        "tag_list",
        "is_image_or_video",
        "image_src",
        "save_location",
        "category",
        "downloaded",
    ),
    Table.GEO: ("ind", "country", "coordinates", "timestamp"),
    Table.USER: ("ind", "user_name", "age", "date_joined"),
}
"""Clean column order of each table (DATA_SPEC.md section 3; pin keeps ``downloaded`` last)."""

ANSWER_NAMES: tuple[str, ...] = (
    "top_category_by_country",
    "top_category_by_year",
    "top_user_by_country",
    "top_country_by_followers",
    "top_category_by_age_group",
    "median_followers_by_age_group",
    "users_joined_by_year",
    "median_followers_by_join_year",
    "median_followers_by_join_year_and_age_group",
)
"""The nine answers in DATA_SPEC.md section 4 order: lake folders and PostgreSQL tables."""

DATETIME_FIELDS: dict[Table, tuple[str, ...]] = {
    Table.PIN: (),
    Table.GEO: ("timestamp",),
    Table.USER: ("date_joined",),
}

DLQ_SUFFIX = "dlq"


def topic_name(prefix: str, table: Table | str) -> str:
    """``<prefix>.<table>``; ``table`` may be ``"dlq"`` for the dead-letter topic."""
    suffix = table.value if isinstance(table, Table) else table
    return f"{prefix}.{suffix}"


def all_topics(prefix: str) -> list[str]:
    """The three table topics and the dead-letter topic."""
    return [topic_name(prefix, table) for table in Table] + [topic_name(prefix, DLQ_SUFFIX)]


def parse_datetime(value: str | datetime) -> datetime:
    """Accept every datetime serialisation seen on the wire; no zone means UTC.

    ``2020-08-28T03:52:47``, ``2020-08-28 03:52:47``, with fractional seconds and/or a zone
    suffix (``Z``, ``+02:00``). Returns an aware datetime in UTC.
    """
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


class DatetimeStyle(str, enum.Enum):
    """How a client serialises datetimes (DATA_SPEC.md section 1, 'Datetimes on the wire')."""

    ISO = "iso"  # 2020-08-28T03:52:47
    SPACE = "space"  # 2020-08-28 03:52:47
    ZONED = "zoned"  # 2020-08-28T03:52:47.000000+00:00

    def format(self, value: datetime) -> str:
        """Serialise a naive-UTC or aware datetime in this style."""
        utc = parse_datetime(value).replace(tzinfo=None)
        if self is DatetimeStyle.ISO:
            return utc.isoformat(timespec="seconds")
        if self is DatetimeStyle.SPACE:
            return utc.isoformat(sep=" ", timespec="seconds")
        return utc.isoformat(timespec="microseconds") + "+00:00"


def format_utc(value: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix: the one datetime form pinpipe stores in Kafka."""
    utc = parse_datetime(value).replace(tzinfo=None)
    timespec = "microseconds" if utc.microsecond else "seconds"
    return utc.isoformat(timespec=timespec) + "Z"


def record_key(table: Table, record: dict) -> bytes | None:
    """The Kafka key of a record: its natural key as UTF-8 text (None when absent)."""
    value = record.get(table.natural_key)
    return None if value is None else str(value).encode()


# --- Raw-record validation (the ingest API's contract for one row) -------------------------
#
# Types are DATA_SPEC.md section 1. Placeholders ("User Info Error", "Image src error.", ...)
# are valid raw data: cleaning turns them into nulls later, validation never does. Every field
# except the row number (and a pin's unique_id, its Kafka key) may be missing or null, so the
# older 11-field pin without ``poster_name`` is valid. Unknown extra fields are kept as they
# came ("raw is raw": the lake keeps the record and cleaning selects the known columns).
# Numbers are strict: ``"12"`` is not an int, ``true`` is not an int, ``1.5`` is not an int.

_RAW_MODEL_CONFIG = ConfigDict(extra="allow", strict=True, frozen=True)


def _utc_text(value: str | None) -> str | None:
    """A wire datetime (any of the three serialisations) as :func:`format_utc` text."""
    if value is None:
        return None
    try:
        return format_utc(parse_datetime(value))
    except (ValueError, OverflowError) as exc:
        raise ValueError("not a datetime (expected e.g. 2020-08-28T03:52:47)") from exc


class RawPin(BaseModel):
    """One ``pinterest_data`` row as a client sends it."""

    model_config = _RAW_MODEL_CONFIG
    normalised: ClassVar[tuple[str, ...]] = ("follower_count",)

    index: int = Field(ge=0, description="Row number; joins to geo.ind and user.ind.")
    unique_id: str = Field(min_length=1, description="Natural key of a pin (the Kafka key).")
    title: str | None = None
    description: str | None = None
    poster_name: str | None = Field(None, description="Missing in the older 11-field generation.")
    follower_count: str | None = Field(
        None, description='"437", "26k", "1M" or "User Info Error"; an integer is stored as text.'
    )
    tag_list: str | None = None
    is_image_or_video: str | None = None
    image_src: str | None = None
    downloaded: int | None = Field(None, ge=0, le=1)
    save_location: str | None = None
    category: str | None = None

    @field_validator("follower_count", mode="before")
    @classmethod
    def _count_as_text(cls, value: Any) -> Any:
        # The raw contract is text; a client sending 437 means "437". bool is not a count.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value


class RawGeo(BaseModel):
    """One ``geolocation_data`` row as a client sends it."""

    model_config = _RAW_MODEL_CONFIG
    normalised: ClassVar[tuple[str, ...]] = ("timestamp",)

    ind: int = Field(ge=0, description="Row number.")
    timestamp: str | None = Field(None, description="Any wire datetime; stored as UTC ...Z.")
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)
    country: str | None = None

    _timestamp = field_validator("timestamp")(_utc_text)


class RawUser(BaseModel):
    """One ``user_data`` row as a client sends it."""

    model_config = _RAW_MODEL_CONFIG
    normalised: ClassVar[tuple[str, ...]] = ("date_joined",)

    ind: int = Field(ge=0, description="Row number.")
    first_name: str | None = None
    last_name: str | None = None
    age: int | None = None
    date_joined: str | None = Field(None, description="Any wire datetime; stored as UTC ...Z.")

    _date_joined = field_validator("date_joined")(_utc_text)


RAW_MODELS: dict[Table, type[BaseModel]] = {Table.PIN: RawPin, Table.GEO: RawGeo, Table.USER: RawUser}


class InvalidRecord(ValueError):
    """A record breaks its table's raw contract; ``reason`` names the fields, never the values."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reason(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        location = ".".join(str(part) for part in item["loc"]) or "record"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}")
    return "; ".join(parts)


def validate_raw(table: Table, record: Any) -> dict[str, Any]:
    """Check ``record`` against the raw contract of ``table``; return the record to store.

    The stored record keeps the client's field names, order and unknown extra fields; only
    datetimes (normalised to :func:`format_utc` text) and an integer ``follower_count`` (to
    text) change. Raises :class:`InvalidRecord` with a reason that names fields, not values.
    """
    if not isinstance(record, dict):
        raise InvalidRecord(f"record: expected a JSON object, got {_json_type(record)}")
    model = RAW_MODELS[table]
    try:
        validated = model.model_validate(record)
    except ValidationError as exc:
        raise InvalidRecord(_reason(exc)) from None
    stored = dict(record)
    for field in model.normalised:
        if field in stored:
            stored[field] = getattr(validated, field)
    return stored


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


# --- Spark schemas (the batch and speed layers parse the lake's / Kafka's value with these) ---


def spark_schema(table: Table) -> Any:
    """The ``pyspark.sql.types.StructType`` of one raw record of ``table``, for ``from_json``.

    Fields in :data:`RAW_FIELDS` order with the raw types of DATA_SPEC.md section 1. Datetimes
    stay text here (``cleaning`` accepts every wire serialisation); ``follower_count`` is text
    (a number sent as JSON is read as its text). pyspark is imported here, not at module import.
    """
    from pyspark.sql import types as T

    integer, double, text = T.IntegerType(), T.DoubleType(), T.StringType()
    numeric = {"index": integer, "ind": integer, "downloaded": integer, "age": integer,
               "latitude": double, "longitude": double}
    table = Table(table)
    return T.StructType(
        [T.StructField(name, numeric.get(name, text), True) for name in RAW_FIELDS[table]]
    )
