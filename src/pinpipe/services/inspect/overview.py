"""``pinpipe topics``: each topic's partitions and offsets, and the consumer groups' lag."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pinpipe.services.inspect.offsets import (
    admin_client,
    kafka_reason,
    list_partitions,
    partition_ends,
    partition_starts,
)


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
            answers[group] = f"no committed offsets: {kafka_reason(exc)}"
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
    admin = admin_client(client_config)
    notes: list[str] = []
    listed: dict[str, str] = {}
    try:
        listing = admin.list_consumer_groups(request_timeout=timeout_s).result()
        listed = {g.group_id: g.state.name.lower() for g in listing.valid}
        notes += [f"listing consumer groups: {kafka_reason(error)}" for error in listing.errors]
    except KafkaException as exc:
        notes.append(f"the broker did not list consumer groups: {kafka_reason(exc)}")
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
