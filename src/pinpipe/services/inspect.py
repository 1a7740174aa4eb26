"""Looking inside the topics: partitions, end offsets, consumer groups' lag, and the records.

What ``pinpipe topics`` and ``pinpipe tail`` show, on the embedded Tansu broker and on any
Kafka. Debian's kcat (librdkafka 2.0.2) cannot talk to the embedded broker at all, so these
are the way to see what a topic holds and why a record went to the dead letters.

Three things the embedded broker needs, all right on Apache Kafka too:

- **End offsets are found by fetching.** Tansu answers ListOffsets(LATEST) with a stale offset
  (ARCHITECTURE.md), so an end is the end-of-partition event of a consumer assigned at that
  stale offset, or the high watermark of the fetch response that brought a record. On Kafka
  the event comes at once. A consumer told to start at the end would start at the stale
  offset on Tansu and show old records: :class:`Tail` starts at the probed ends instead.
- **Topics are never named in a metadata request.** Tansu creates a topic when its metadata
  is asked for (measured: ``list_topics(topic="nope")`` made ``nope`` with 4 partitions), so
  topics are looked up in the list of all topics, and an unknown one is an error, not a topic.
- **No consumer group is joined or committed.** The consumers here are assign-only with
  ``enable.auto.commit`` off; librdkafka wants a ``group.id`` all the same, so they carry
  :data:`INSPECT_GROUP`, which never appears in the broker's list of groups.

Tansu 0.6.0 lists only the consumer groups that have committed offsets (a group that joined
but never committed is not listed) and reports each as ``unknown`` in that list; its
DescribeGroups answers the state (``stable``, ``empty``). What a broker cannot answer becomes a
note of :class:`Overview`, not an error.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

from pinpipe.events import format_utc

INSPECT_GROUP = "pinpipe-inspect"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

PartitionKey = tuple[str, int]


class InspectError(RuntimeError):
    """The broker could not answer what was asked; the message says what and where.

    ``retriable`` says whether trying again may help (a timeout, an unreachable broker).
    """

    def __init__(self, message: str, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


class UnknownTopicError(InspectError):
    """The topic (or partition) does not exist; it was not created by asking (terminal)."""


# --- what the broker holds ------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionOffsets:
    """One partition: ``start`` is the first offset held, ``end`` the next one to be written.

    ``end`` is None when no fetch answered before the deadline.
    """

    topic: str
    partition: int
    start: int
    end: int | None

    @property
    def records(self) -> int | None:
        return None if self.end is None else max(self.end - self.start, 0)


@dataclass(frozen=True)
class TopicSummary:
    """A topic and its partitions, in partition order."""

    name: str
    partitions: tuple[PartitionOffsets, ...]

    @property
    def internal(self) -> bool:
        """Kafka's convention: names starting with ``__`` are the broker's own topics."""
        return is_internal(self.name)

    @property
    def end(self) -> int | None:
        """The sum of the partitions' end offsets (None if one is unknown)."""
        return _sum_known(p.end for p in self.partitions)

    @property
    def records(self) -> int | None:
        return _sum_known(p.records for p in self.partitions)


@dataclass(frozen=True)
class GroupPartitionLag:
    """A consumer group's committed offset in one partition against the partition's end."""

    topic: str
    partition: int
    committed: int
    end: int | None

    @property
    def lag(self) -> int | None:
        """Records after the committed offset (None when the end is unknown)."""
        return None if self.end is None else max(self.end - self.committed, 0)


@dataclass(frozen=True)
class GroupSummary:
    """A consumer group: its state as the broker reports it, and its lag per partition."""

    group_id: str
    state: str
    partitions: tuple[GroupPartitionLag, ...]
    error: str | None = None

    @property
    def lag(self) -> int | None:
        return _sum_known(p.lag for p in self.partitions)


@dataclass(frozen=True)
class Overview:
    """What ``pinpipe topics`` shows; ``notes`` say what the broker could not answer."""

    bootstrap_servers: str
    topics: tuple[TopicSummary, ...]
    groups: tuple[GroupSummary, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form, totals included."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "topics": [
                {
                    "name": topic.name,
                    "end": topic.end,
                    "records": topic.records,
                    "partitions": [
                        {"partition": p.partition, "start": p.start, "end": p.end,
                         "records": p.records}
                        for p in topic.partitions
                    ],
                }
                for topic in self.topics
            ],
            "groups": [
                {
                    "group_id": group.group_id,
                    "state": group.state,
                    "lag": group.lag,
                    "error": group.error,
                    "partitions": [
                        {"topic": p.topic, "partition": p.partition, "committed": p.committed,
                         "end": p.end, "lag": p.lag}
                        for p in group.partitions
                    ],
                }
                for group in self.groups
            ],
            "notes": list(self.notes),
        }  # fmt: skip


def is_internal(topic: str) -> bool:
    """True for the broker's own topics (``__consumer_offsets`` and the like)."""
    return topic.startswith("__")


def _sum_known(values: Iterable[int | None]) -> int | None:
    total = 0
    for value in values:
        if value is None:
            return None
        total += value
    return total


def _admin(client_config: dict):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"log_level": 0, **client_config})


def _consumer(client_config: dict, **overrides: Any):
    from confluent_kafka import Consumer

    return Consumer(
        {
            "log_level": 0,  # errors reach the caller as exceptions, not as stderr lines
            **client_config,
            "group.id": INSPECT_GROUP,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            **overrides,
        }
    )


def list_partitions(client_config: dict, timeout_s: float = 10.0) -> dict[str, list[int]]:
    """Every topic the broker holds, with its partition numbers (sorted).

    Asks for all topics at once: naming a topic in the request would create it on Tansu.
    Raises :class:`InspectError` (retriable) when the broker does not answer.
    """
    return _partitions_known_to(_admin(client_config), client_config, timeout_s)


def _partitions_known_to(
    client: Any, client_config: dict, timeout_s: float
) -> dict[str, list[int]]:
    """:func:`list_partitions` asked through ``client`` (an admin client or a consumer).

    Asked of a consumer before it is assigned, the answer also tells it the partitions'
    leaders: without them librdkafka waits 500 ms before it first asks for an offset.
    """
    from confluent_kafka import KafkaException

    try:
        metadata = client.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        where = client_config.get("bootstrap.servers")
        raise InspectError(f"no answer from the broker at {where}: {_reason(exc)}", True) from exc
    return {
        name: sorted(topic.partitions)
        for name, topic in sorted(metadata.topics.items())
        if topic.error is None
    }


def _reason(problem: Any) -> str:
    """The text of a KafkaError, or of the one a KafkaException carries, not their repr."""
    error = problem.args[0] if isinstance(problem, Exception) and problem.args else problem
    return error.str() if hasattr(error, "str") else str(problem)


def partition_ends(
    client_config: dict, partitions: Iterable[PartitionKey], timeout_s: float = 10.0
) -> dict[PartitionKey, int | None]:
    """The end offset (the next offset to be written) of each partition, found by fetching.

    All partitions are assigned at once at the broker's (possibly stale) latest offset; a
    partition's end is its end-of-partition event, or the high watermark of the fetch response
    that brought a record there (that record's offset + 1 at least). A partition that did not
    answer before ``timeout_s`` gets None.
    """
    from confluent_kafka import OFFSET_END, KafkaError, TopicPartition

    wanted = sorted(set(partitions))
    ends: dict[PartitionKey, int | None] = dict.fromkeys(wanted)
    if not wanted:
        return ends
    consumer = _consumer(
        client_config, **{"fetch.wait.max.ms": 10, "queued.max.messages.kbytes": 4096}
    )
    try:
        _partitions_known_to(consumer, client_config, timeout_s)
        consumer.assign([TopicPartition(topic, part, OFFSET_END) for topic, part in wanted])
        pending = set(wanted)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.02):
                key = (message.topic(), message.partition())
                error = message.error()
                if key not in pending:
                    continue
                if error is None:
                    high = consumer.get_watermark_offsets(TopicPartition(*key), cached=True)[1]
                    ends[key] = max(int(high), message.offset() + 1)
                elif error.code() == KafkaError._PARTITION_EOF:
                    ends[key] = int(message.offset())
                else:
                    continue  # librdkafka retries; the deadline bounds the wait
                pending.discard(key)
                consumer.pause([TopicPartition(*key)])
    finally:
        consumer.close()
    return ends


def partition_starts(
    client_config: dict, partitions: Iterable[PartitionKey], timeout_s: float = 10.0
) -> dict[PartitionKey, int]:
    """The first offset each partition holds (ListOffsets EARLIEST, right on Tansu too)."""
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    admin = _admin(client_config)  # must outlive the futures
    futures = admin.list_offsets(
        {TopicPartition(topic, part): OffsetSpec.earliest() for topic, part in wanted},
        request_timeout=timeout_s,
    )
    starts: dict[PartitionKey, int] = {}
    for tp, future in futures.items():
        try:
            starts[(tp.topic, tp.partition)] = max(int(future.result().offset), 0)
        except KafkaException as exc:
            raise InspectError(
                f"no start offset for {tp.topic}[{tp.partition}]: {_reason(exc)}", retriable=True
            ) from exc
    return starts


def _committed_offsets(admin: Any, group_ids: list[str], timeout_s: float) -> dict[str, Any]:
    """``{group: [TopicPartition, ...] | error text}``, one request per group, all in flight."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    # librdkafka takes one group per ListConsumerGroupOffsets request.
    futures = {
        group: admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=timeout_s
        )[group]
        for group in group_ids
    }
    answers: dict[str, Any] = {}
    for group, future in futures.items():
        try:
            answers[group] = [tp for tp in future.result().topic_partitions if tp.offset >= 0]
        except Exception as exc:  # noqa: BLE001 - KafkaException or an unsupported API
            answers[group] = f"no committed offsets: {_reason(exc)}"
    return answers


def _group_states(admin: Any, group_ids: list[str], timeout_s: float) -> dict[str, str]:
    if not group_ids:
        return {}
    states: dict[str, str] = {}
    try:
        futures = admin.describe_consumer_groups(group_ids, request_timeout=timeout_s)
    except Exception:  # noqa: BLE001 - the listing's state stands
        return states
    for group, future in futures.items():
        try:
            states[group] = future.result().state.name.lower()
        except Exception:  # noqa: BLE001 - the listing's state stands
            continue
    return states


def overview(
    client_config: dict, include_internal: bool = False, timeout_s: float = 10.0
) -> Overview:
    """Topics with each partition's start and end offsets, and consumer groups with their lag.

    Internal topics (``__*``), and groups' offsets in them, are left out unless
    ``include_internal``. Raises :class:`InspectError` when the broker does not answer at all;
    a group API the broker lacks becomes a note.
    """
    from confluent_kafka import KafkaException

    bootstrap = str(client_config.get("bootstrap.servers", ""))
    every_topic = list_partitions(client_config, timeout_s)
    topics = {
        name: parts
        for name, parts in every_topic.items()
        if include_internal or not is_internal(name)
    }
    existing = {(name, part) for name, parts in every_topic.items() for part in parts}
    admin = _admin(client_config)
    notes: list[str] = []
    listed: dict[str, str] = {}
    try:
        listing = admin.list_consumer_groups(request_timeout=timeout_s).result()
        listed = {g.group_id: g.state.name.lower() for g in listing.valid}
        notes += [f"listing consumer groups: {_reason(error)}" for error in listing.errors]
    except KafkaException as exc:
        notes.append(f"the broker did not list consumer groups: {_reason(exc)}")
    group_ids = sorted(listed)
    states = {**listed, **_group_states(admin, group_ids, timeout_s)}
    committed = _committed_offsets(admin, group_ids, timeout_s)

    keys = {(name, part) for name, parts in topics.items() for part in parts}
    for offsets in committed.values():
        if isinstance(offsets, list):
            keys |= {(tp.topic, tp.partition) for tp in offsets
                     if include_internal or not is_internal(tp.topic)}  # fmt: skip
    # Only partitions that exist: asking about a deleted topic's partition would create it.
    keys &= existing
    starts = partition_starts(client_config, keys, timeout_s)
    ends = partition_ends(client_config, keys, timeout_s)
    unanswered = sorted(key for key, end in ends.items() if end is None)
    if unanswered:
        names = ", ".join(f"{topic}[{part}]" for topic, part in unanswered)
        notes.append(f"no end offset within {timeout_s:g} s for {names}")

    summaries = tuple(
        TopicSummary(
            name,
            tuple(PartitionOffsets(name, part, starts[(name, part)], ends[(name, part)])
                  for part in parts),
        )
        for name, parts in sorted(topics.items())
    )  # fmt: skip
    groups = []
    for group in group_ids:
        offsets = committed[group]
        if isinstance(offsets, str):
            groups.append(GroupSummary(group, states[group], (), error=offsets))
            continue
        lags = tuple(
            GroupPartitionLag(tp.topic, tp.partition, int(tp.offset),
                              ends.get((tp.topic, tp.partition)))
            for tp in sorted(offsets, key=lambda tp: (tp.topic, tp.partition))
            if include_internal or not is_internal(tp.topic)
        )  # fmt: skip
        groups.append(GroupSummary(group, states[group], lags))
    return Overview(bootstrap, summaries, tuple(groups), tuple(notes))


# --- the records ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TailRecord:
    """One record as the broker holds it; ``timestamp`` is ISO-8601 UTC (None if the broker
    has none). Header values are bytes (or None), in the order the producer gave them."""

    topic: str
    partition: int
    offset: int
    timestamp: str | None
    key: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    value: bytes | None

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` as text (None if absent or null)."""
        for header, value in reversed(self.headers):
            if header == name:
                return None if value is None else value.decode(errors="replace")
        return None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form: key, value and header values as text when they are UTF-8, else
        base64, said by ``key_encoding`` / ``value_encoding`` ("utf-8" | "base64", null when
        the field is null) and by a third element ``"base64"`` of such a header's pair."""
        key, key_encoding = _as_text(self.key)
        value, value_encoding = _as_text(self.value)
        headers: list[list[str | None]] = []
        for name, raw in self.headers:
            text, encoding = _as_text(raw)
            headers.append([name, text] if encoding != "base64" else [name, text, "base64"])
        return {
            "topic": self.topic, "partition": self.partition, "offset": self.offset,
            "timestamp": self.timestamp, "key": key, "key_encoding": key_encoding,
            "headers": headers, "value": value, "value_encoding": value_encoding,
        }  # fmt: skip

    def as_text(self) -> str:
        """Readable lines: the coordinates, one line per header, the value (``null`` for none;
        bytes that are not UTF-8 are shown as base64, said in brackets)."""
        data = self.as_dict()

        def shown(text: str | None, encoding: str | None) -> str:
            if text is None:
                return "null"
            return f"[base64] {text}" if encoding == "base64" else text

        lines = [f"{self.topic} partition {self.partition} offset {self.offset}"
                 f" at {self.timestamp or '(no timestamp)'}"
                 f" key {shown(data['key'], data['key_encoding'])}"]  # fmt: skip
        for name, text, *encoding in data["headers"]:
            lines.append(f"  header {name}: {shown(text, encoding[0] if encoding else None)}")
        lines.append(f"  value {shown(data['value'], data['value_encoding'])}")
        return "\n".join(lines)


def _as_text(raw: bytes | None) -> tuple[str | None, str | None]:
    import base64

    if raw is None:
        return None, None
    try:
        return raw.decode(), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode(), "base64"


def _timestamp(message: Any) -> str | None:
    from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

    kind, millis = message.timestamp()
    if kind == TIMESTAMP_NOT_AVAILABLE or millis is None or millis < 0:
        return None
    return format_utc(_EPOCH + timedelta(milliseconds=millis))


def _record(message: Any) -> TailRecord:
    return TailRecord(
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        timestamp=_timestamp(message),
        key=message.key(),
        headers=tuple((name, value) for name, value in message.headers() or ()),
        value=message.value(),
    )


class Tail:
    """Reads one topic's records, like ``kcat -C``: an assign-only consumer, nothing committed.

    On entering, the topic (and ``partition``, if given) is looked up, and the consumer is
    placed at the first record of each partition, or with ``from_end`` at each partition's end
    (probed by :func:`partition_ends`; :attr:`start_offsets` says where). Then iterate
    :meth:`records`.
    """

    def __init__(
        self,
        client_config: dict,
        topic: str,
        partition: int | None = None,
        from_end: bool = False,
        timeout_s: float = 30.0,
    ) -> None:
        self.client_config = client_config
        self.topic = topic
        self.partition = partition
        self.from_end = from_end
        self.timeout_s = timeout_s
        self.partitions: list[int] = []
        self.start_offsets: dict[int, int | None] = {}  # None: the first record held
        self._consumer: Any = None

    def __enter__(self) -> Self:
        self._consumer = _consumer(self.client_config, **{"fetch.wait.max.ms": 100})
        try:
            self._place()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _place(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        found = _partitions_known_to(self._consumer, self.client_config, min(self.timeout_s, 10))
        if self.topic not in found:
            raise UnknownTopicError(f"no topic {self.topic!r} on the broker")
        partitions = found[self.topic]
        if self.partition is not None:
            if self.partition not in partitions:
                raise UnknownTopicError(
                    f"topic {self.topic!r} has no partition {self.partition}"
                    f" (its partitions: {', '.join(map(str, partitions))})"
                )
            partitions = [self.partition]
        self.partitions = partitions
        if self.from_end:
            ends = partition_ends(self.client_config, [(self.topic, p) for p in partitions],
                                  timeout_s=min(self.timeout_s, 10.0))  # fmt: skip
            missing = [p for (_, p), end in ends.items() if end is None]
            if missing:
                raise InspectError(
                    f"no end offset for {self.topic} partitions {missing}: the broker did not "
                    "answer a fetch in time", retriable=True,
                )  # fmt: skip
            self.start_offsets = {p: ends[(self.topic, p)] for p in partitions}
        else:
            self.start_offsets = dict.fromkeys(partitions)
        self._consumer.assign([
            TopicPartition(self.topic, p, OFFSET_BEGINNING if offset is None else offset)
            for p, offset in self.start_offsets.items()
        ])  # fmt: skip

    def records(self, count: int | None = None, follow: bool = False) -> Iterator[TailRecord]:
        """The records in offset order per partition (partitions interleaved as fetched).

        Stops after ``count`` records; without ``follow`` also once every partition reported
        its end (raising :class:`InspectError` if the broker stays silent for ``timeout_s``);
        with ``follow`` it waits for new records until the caller stops iterating.
        """
        from confluent_kafka import KafkaError, TopicPartition

        if self._consumer is None:
            raise RuntimeError("use Tail as a context manager: with Tail(...) as tail")
        left = count
        at_end: set[int] = set()
        heard = time.monotonic()
        while (left is None or left > 0) and (follow or len(at_end) < len(self.partitions)):
            messages = self._consumer.consume(min(left or 500, 500), timeout=0.1)
            if messages:
                heard = time.monotonic()
            elif not follow and time.monotonic() - heard > self.timeout_s:
                waiting = sorted(set(self.partitions) - at_end)
                raise InspectError(
                    f"no answer for {self.topic} partitions {waiting} in {self.timeout_s:g} s",
                    retriable=True,
                )
            for message in messages:
                error = message.error()
                if error is None:
                    yield _record(message)
                    if left is not None:
                        left -= 1
                        if left == 0:
                            return
                elif error.code() == KafkaError._PARTITION_EOF:
                    if not follow:
                        at_end.add(message.partition())
                        self._consumer.pause([TopicPartition(self.topic, message.partition())])
                elif error.fatal() or error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise InspectError(f"reading {self.topic}: {error.str()}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()
