"""Kinesis streams as pinpipe's topics: what ListStreams, DescribeStream, CreateStream and
DeleteStream see and do.

**A stream is a table's topic.** A stream name maps to a table by its last ``-`` part, as
PutRecord maps it (``streaming-<user>-pin``, any ``<x>-pin``, is the topic ``<prefix>.pin``),
so every such name is one stream, the same records and shards whatever name a client uses.
Nothing is stored besides the topics: every API worker, and an API restarted, sees the same
streams. ListStreams names each table whose topic exists once, as ``<prefix>-<table>``
(``pinpipe-pin``); remembering which aliases clients created would need state of its own
(marker topics next to the pipeline's, or a registry) and would still not cover the names
clients write to without creating them.

**What protects the pipeline's data:**

- CreateStream of a table's name whose topic exists is ``ResourceInUseException`` (it
  already exists, under whatever alias); a missing topic (deleted, or not made because the
  broker was down when the API started) is created with ``ShardCount`` partitions. A name that
  maps to no table is refused (``InvalidArgumentException``): PutRecord answers 404 for it, so
  records sent to it would have nowhere to go.
- DeleteStream never deletes a topic unless ``ingest.kinesis_allow_delete`` is set: that
  would delete the pipeline's records, those the lake sink and the stream job have not read
  yet among them. Without the setting it answers ``AccessDeniedException``, which Kinesis clients do not retry
  (``ResourceInUseException`` would read as "wait and try again"). With it the topic is
  deleted (DeleteTopics, which the embedded Tansu broker supports); CreateStream, a producer
  writing to the table, the API's or the lake sink's next start make it again. Only with
  nothing writing: Tansu 0.6.0 acknowledges the records a producer that knew the deleted topic
  sends next, lists and serves none of them, and shows them once the topic exists again.

Described from the topic: partitions become shards ``shardId-%012d`` with the hash key space
split evenly as Kinesis splits it (nominal: records are placed by their natural key, not by
a partition key's hash), a shard's ``StartingSequenceNumber`` is its partition's first offset
(PutRecord's sequence numbers are offsets too), ``StreamCreationTimestamp`` is the time of the
oldest record the topic holds (brokers do not tell when a topic was made; 0 while it holds
none). Region and account in ARNs and messages are the fake :data:`REGION` and
:data:`ACCOUNT_ID`. Topics are only ever looked up in the list of all topics: naming one in a
metadata request creates it on Tansu.

The functions block (broker round trips): the routes run them in a thread, with a deadline.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from pinpipe.config import Settings
from pinpipe.events import Table, topic_name
from pinpipe.ingest.errors import KinesisError
from pinpipe.services.inspect.offsets import first_record_times, partition_starts
from pinpipe.services.topics import delete_topics, describe_topics, ensure_topics

REGION = "us-east-1"
ACCOUNT_ID = "000000000000"  # clearly not an AWS account (LocalStack's convention)
RETENTION_PERIOD_HOURS = 24  # Kinesis's default; the topic's own retention is not read
MAX_SHARD_COUNT = 500  # Kinesis's default shard quota of an account (us-east-1)
NAME_PATTERN = "[a-zA-Z0-9_.-]+"
NAME_MAX_LENGTH = 128
HASH_KEY_SPACE = 2**128

_NAME = re.compile(NAME_PATTERN)


def table_of(name: str) -> Table | None:
    """The table a stream name maps to (by its last ``-`` part), None for no table."""
    try:
        return Table(name.rpartition("-")[2])
    except ValueError:
        return None


def canonical_name(prefix: str, table: Table) -> str:
    """The name ListStreams gives the table's stream: ``<prefix>-<table>``."""
    return f"{prefix}-{table.value}"


def stream_arn(name: str) -> str:
    return f"arn:aws:kinesis:{REGION}:{ACCOUNT_ID}:stream/{name}"


def shard_id(partition: int) -> str:
    return f"shardId-{partition:012d}"


def hash_key_ranges(shards: int) -> list[tuple[int, int]]:
    """The hash key space 0..2^128-1 split into ``shards`` ranges, as Kinesis splits it."""
    step = HASH_KEY_SPACE // shards
    return [
        (index * step, HASH_KEY_SPACE - 1 if index == shards - 1 else (index + 1) * step - 1)
        for index in range(shards)
    ]


# --- Kinesis's validation answers ------------------------------------------------------------


def validation_error(*problems: str) -> KinesisError:
    """``ValidationException`` in AWS's words: ``1 validation error detected: Value ...``."""
    count = len(problems)
    detected = f"{count} validation error{'s' if count > 1 else ''} detected"
    return KinesisError(400, "ValidationException", f"{detected}: {'; '.join(problems)}")


def constraint(field: str, value: Any, rule: str) -> str:
    return f"Value '{value}' at '{field}' failed to satisfy constraint: Member must {rule}"


def check_name(name: str, field: str = "streamName") -> str:
    """``name`` if Kinesis accepts it as a stream name, else ``ValidationException``."""
    problems = []
    if len(name) > NAME_MAX_LENGTH:
        problems.append(
            constraint(field, name, f"have length less than or equal to {NAME_MAX_LENGTH}")
        )
    if not _NAME.fullmatch(name):
        problems.append(
            constraint(field, name, f"satisfy regular expression pattern: {NAME_PATTERN}")
        )
    if problems:
        raise validation_error(*problems)
    return name


def check_integer(value: Any, field: str, low: int, high: int | None = None) -> int:
    """``value`` as an integer within ``low..high``: ``SerializationException`` for another
    type (as AWS answers a JSON value it cannot convert), ``ValidationException`` out of range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise KinesisError(
            400, "SerializationException", f"{field}: expected an integer, got {value!r}"
        )
    if value < low:
        rule = f"have value greater than or equal to {low}"
    elif high is not None and value > high:
        rule = f"have value less than or equal to {high}"
    else:
        return value
    raise validation_error(constraint(field, value, rule))


def page(names: list[str], limit: int, exclusive_start: str | None) -> tuple[list[str], bool]:
    """ListStreams' page: up to ``limit`` names after ``exclusive_start``, and whether more
    follow."""
    after = [name for name in sorted(names) if exclusive_start is None or name > exclusive_start]
    return after[:limit], len(after) > limit


def not_found(name: str, hint: str = "") -> KinesisError:
    message = f"Stream {name} under account {ACCOUNT_ID} not found.{hint}"
    return KinesisError(400, "ResourceNotFoundException", message)


def pipeline_table(name: str) -> Table | None:
    """The table of a valid stream name (``ValidationException`` otherwise), None for none."""
    return table_of(check_name(name))


def creation(name: str, shard_count: Any, default_shards: int) -> tuple[Table, int]:
    """What CreateStream of ``name`` makes, the table and its partitions, or the 400 Kinesis
    answers that needs no broker (``shard_count`` None: ``default_shards``)."""
    table = pipeline_table(name)
    shards = default_shards if shard_count is None else check_integer(shard_count, "shardCount", 1)
    if table is None:
        raise KinesisError(
            400,
            "InvalidArgumentException",
            f"pinpipe accepts only streams that map onto its tables, names ending in -pin, "
            f"-geo or -user: records sent to {name} would have nowhere to go.",
        )
    if shards > MAX_SHARD_COUNT:
        raise KinesisError(
            400,
            "LimitExceededException",
            f"This request would exceed the shard limit for the account {ACCOUNT_ID} in "
            f"{REGION}. Limit: {MAX_SHARD_COUNT}. Number of additional shards that would "
            f"have resulted from this request: {shards}.",
        )
    return table, shards


# --- descriptions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    partition: int
    hash_keys: tuple[int, int]
    first_offset: int

    def as_kinesis(self) -> dict[str, Any]:
        return {
            "ShardId": shard_id(self.partition),
            "HashKeyRange": {
                "StartingHashKey": str(self.hash_keys[0]),
                "EndingHashKey": str(self.hash_keys[1]),
            },
            "SequenceNumberRange": {"StartingSequenceNumber": str(self.first_offset)},
        }


@dataclass(frozen=True)
class StreamDescription:
    """One stream as DescribeStream answers it; ``created`` in epoch seconds (0: unknown)."""

    name: str
    shards: tuple[Shard, ...]
    created: float

    def as_kinesis(self) -> dict[str, Any]:
        return {
            "StreamDescription": {
                "StreamName": self.name,
                "StreamARN": stream_arn(self.name),
                "StreamStatus": "ACTIVE",
                "StreamModeDetails": {"StreamMode": "PROVISIONED"},
                "Shards": [shard.as_kinesis() for shard in self.shards],
                "HasMoreShards": False,
                "RetentionPeriodHours": RETENTION_PERIOD_HOURS,
                "StreamCreationTimestamp": self.created,
                "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
                "EncryptionType": "NONE",
            }
        }


def stream_summary(name: str) -> dict[str, Any]:
    """One entry of ListStreams' ``StreamSummaries``."""
    return {
        "StreamName": name,
        "StreamARN": stream_arn(name),
        "StreamStatus": "ACTIVE",
        "StreamModeDetails": {"StreamMode": "PROVISIONED"},
    }


# --- the broker side ------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamAdmin:
    """The stream operations over one broker's topics (blocking; connects per call), for
    requests that passed :func:`pipeline_table` / :func:`creation`.

    Broker trouble raises :class:`~pinpipe.services.topics.TopicError` or
    :class:`~pinpipe.services.inspect.InspectError` (``transient`` when trying again may help);
    what Kinesis would refuse raises :class:`KinesisError`.
    """

    client_config: dict[str, str]
    prefix: str
    partitions: int
    replication_factor: int
    allow_delete: bool
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamAdmin:
        broker = settings.broker
        return cls(
            broker.client_config(broker.bootstrap_servers or ""),
            broker.topic_prefix,
            broker.partitions,
            broker.replication_factor,
            settings.ingest.kinesis_allow_delete,
            settings.ingest.admin_timeout_s,
        )

    def names(self) -> list[str]:
        """The canonical name of every table whose topic exists, sorted."""
        existing = describe_topics(self.client_config, timeout=self.timeout_s)
        return sorted(
            canonical_name(self.prefix, table)
            for table in Table
            if topic_name(self.prefix, table) in existing
        )

    def describe(self, name: str, table: Table | None) -> StreamDescription:
        """``name``'s description (``table``: :func:`pipeline_table` of it)."""
        deadline = time.monotonic() + self.timeout_s
        if table is None:
            raise not_found(name, " pinpipe's streams are the names ending in -pin, -geo or -user.")
        topic = topic_name(self.prefix, table)
        count = describe_topics(self.client_config, timeout=self.timeout_s).get(topic)
        if not count:
            raise not_found(name)
        keys = [(topic, partition) for partition in range(count)]
        starts = partition_starts(self.client_config, keys, _left(deadline))
        times = [t for t in first_record_times(self.client_config, keys, _left(deadline)).values()
                 if t is not None]  # fmt: skip
        shards = tuple(
            Shard(partition, hash_keys, starts[(topic, partition)])
            for partition, hash_keys in enumerate(hash_key_ranges(count))
        )
        return StreamDescription(name, shards, min(times) / 1000 if times else 0)

    def create(self, name: str, table: Table, shards: int) -> None:
        """Create ``table``'s topic with ``shards`` partitions (see :func:`creation`)."""
        topic = topic_name(self.prefix, table)
        outcome = ensure_topics(
            self.client_config, [topic], shards, self.replication_factor, timeout=self.timeout_s
        )
        if outcome[topic] == "exists":
            raise KinesisError(
                400,
                "ResourceInUseException",
                f"Stream {name} under account {ACCOUNT_ID} already exists. It is pinpipe's "
                f"{table.value} stream (topic {topic}), under any name ending in -{table.value}.",
            )

    def delete(self, name: str, table: Table | None) -> None:
        """Delete ``table``'s topic, if it exists and ``allow_delete`` is set."""
        topic = topic_name(self.prefix, table) if table is not None else None
        if topic is None or topic not in describe_topics(self.client_config, self.timeout_s):
            raise not_found(name)
        if not self.allow_delete:
            raise KinesisError(
                400,
                "AccessDeniedException",
                f"pinpipe does not delete stream {name}: it is the pipeline's {table.value} "
                f"stream, and deleting its topic {topic} would delete every {table.value} record "
                "in it. An administrator can allow it with ingest.kinesis_allow_delete = true "
                "(PINPIPE_INGEST__KINESIS_ALLOW_DELETE).",
            )
        if delete_topics(self.client_config, [topic], timeout=self.timeout_s)[topic] == "missing":
            raise not_found(name)


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())
