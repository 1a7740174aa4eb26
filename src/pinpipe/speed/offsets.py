"""Kafka offsets for the streaming source: parsing, end-offset probing, read limits.

An *offset map* is ``{topic: {"<partition>": next_offset}}`` (partition numbers as text, so the
map is the same after a JSON round trip through Spark's checkpoint): the offset of the next
record to read in each partition. A micro-batch reads ``[start, end)`` per partition.

Finding the end of a partition
------------------------------
Kafka's ListOffsets(LATEST) (``Consumer.get_watermark_offsets(cached=False)``) is the usual
answer, but the embedded Tansu broker answers it with a **stale** offset: measured here,
1,001 for a partition holding 1,500 records written in batches, and 1,501 after seven more
single records (the base offset of the last record batch, roughly). The high watermark in
*fetch responses* is right. :class:`EndProbe` therefore asks by fetching: it assigns a
consumer at the last known end of every partition and waits, per partition, for either

- a record: then the fetch response's high watermark (``get_watermark_offsets(cached=True)``)
  is the end, or the record's offset + 1 if that is larger (a cached high watermark counts
  only once it has changed during this probe: the value left from the previous probe's last
  fetch is an answer only when nothing fresher came before the deadline); or
- the end-of-partition event (``enable.partition.eof``): the fetch found nothing at the known
  end, and the event's offset *is* the end.

One small fetch per partition and trigger, measured at ~5 ms for three partitions, whether
records are waiting or the partitions are idle (the broker holds an empty fetch for 1 ms, and
the probe takes events in 5 ms slices: with 50 ms slices, as before, an idle probe took 51 ms,
since ``consume`` waits out its timeout unless it has all the messages it asked for). A
partition that does not answer before the deadline takes the last high watermark its consumer
saw, or keeps its last known end: the answer is never beyond the records that exist, so a slow
probe delays records to a later trigger and never skips or invents any. The same probe is right on
Apache Kafka, where it costs one fetch more than ListOffsets.

Once one partition has answered, the others get a short grace (``grace_s``) rather than the
whole deadline: inside the stream job one partition's fetch now and then stalled for ~1 s
(21 of 159 triggers of a 5-minute run at 6,000 records/s), holding back the micro-batch of
every partition with it. A partition that missed the grace is waited for up to the deadline
at the next probe, so each one advances at least every other trigger.

Which log the offsets belong to
-------------------------------
An offset means something only in the log it was taken from: the embedded broker keeps its log
in memory and a restarted one starts again at 0. The source therefore stores, next to the
partitions, a *log mark* under the key ``"@log"`` (``@`` cannot occur in a Kafka topic name):
``{"cluster": "<cluster id>", "from": {topic: {"<partition>": first_offset}}}``. ``cluster`` is
the broker's cluster id when the offsets were taken (the embedded broker reports a new one per
start; a real Kafka keeps its own); ``from``, present only in some micro-batches, holds the
first offset of partitions whose range does not begin at the previous batch's end (partitions
that appeared, and every partition of a restarted log), so a replayed batch reads the same
records without asking the broker. :func:`split_log` and :func:`mark_log` read and write it;
a map without the mark (checkpoints written before it) reads as cluster unknown.

Unreachable brokers
-------------------
Metadata and ListOffsets calls have short timeouts and raise :class:`BrokerUnavailable`
(transient: retrying helps) instead of librdkafka's exception; the source waits on it.
:attr:`EndProbe.behind` names the partitions whose fetch-response high watermark came back
*below* the offset the probe was asked to start from: records the log no longer has, i.e. a
log that restarted without a new cluster id.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from pinpipe.errors import TerminalError, TransientError

log = logging.getLogger(__name__)

OffsetMap = dict[str, dict[str, int]]

EARLIEST = -2
LATEST = -1
LOG_KEY = "@log"
"""The key of the log mark in a stored offset map (see the module docstring)."""


class BrokerUnavailable(TransientError):
    """The broker did not answer a metadata or offset request in time."""


def split_log(stored: dict) -> tuple[OffsetMap, dict]:
    """A stored offset map -> (the partitions' offsets, the log mark; ``{}`` if it has none)."""
    mark = stored.get(LOG_KEY)
    offsets = {
        topic: {str(p): int(o) for p, o in parts.items()}
        for topic, parts in stored.items()
        if topic != LOG_KEY and isinstance(parts, dict)
    }
    return offsets, dict(mark) if isinstance(mark, dict) else {}


def mark_log(offsets: OffsetMap, cluster: str | None, first: OffsetMap | None = None) -> dict:
    """``offsets`` with the log mark: the ``cluster`` id and the ``first`` offsets, if any."""
    mark: dict[str, Any] = {"cluster": cluster}
    first = {t: parts for t, parts in (first or {}).items() if parts}
    if first:
        mark["from"] = first
    return {**offsets, LOG_KEY: mark}


class OffsetSpecError(TerminalError, ValueError):
    """``startingOffsets`` is not ``earliest``, ``latest`` or a JSON offset map."""


def parse_starting_offsets(spec: str | None) -> str | OffsetMap:
    """``"earliest"`` / ``"latest"`` as is, or the JSON form ``{"t": {"0": 42, "1": -2}}``.

    In the JSON form ``-2`` means earliest and ``-1`` latest (Spark's kafka source spelling);
    partitions not named start at earliest.
    """
    text = (spec or "earliest").strip()
    if text.lower() in ("earliest", "latest"):
        return text.lower()
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OffsetSpecError(f"startingOffsets is not earliest, latest or JSON: {exc}") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise OffsetSpecError('startingOffsets JSON must look like {"topic": {"0": 42}}')
    try:
        return {
            str(topic): {str(int(p)): int(o) for p, o in parts.items()}
            for topic, parts in parsed.items()
        }
    except (TypeError, ValueError):
        raise OffsetSpecError("startingOffsets JSON: partitions and offsets must be integers") from None


def limit_offsets(start: OffsetMap, end: OffsetMap, max_records: int | None) -> OffsetMap:
    """``end`` cut so that at most ``max_records`` records lie between ``start`` and it.

    The budget is shared in proportion to each partition's backlog (as Spark's kafka source
    does), rounding down, with the remainder going one by one to the largest backlogs, so
    a limit smaller than the number of partitions still advances the stream.
    """
    if max_records is None:
        return end
    backlog = {
        (topic, part): max(0, offset - start.get(topic, {}).get(part, offset))
        for topic, parts in end.items()
        for part, offset in parts.items()
    }
    total = sum(backlog.values())
    if total <= max_records:
        return end
    share = {key: (lag * max_records) // total for key, lag in backlog.items()}
    left = max_records - sum(share.values())
    for key in sorted(backlog, key=lambda k: backlog[k] - share[k], reverse=True):
        if left <= 0:
            break
        if share[key] < backlog[key]:
            share[key] += 1
            left -= 1
    limited: OffsetMap = {}
    for (topic, part), taken in share.items():
        first = start.get(topic, {}).get(part, end[topic][part])
        limited.setdefault(topic, {})[part] = min(end[topic][part], first + taken)
    return limited


def records_between(start: OffsetMap, end: OffsetMap) -> int:
    """How many offsets lie between two maps (an upper bound of the records)."""
    return sum(
        max(0, offset - start.get(topic, {}).get(part, offset))
        for topic, parts in end.items()
        for part, offset in parts.items()
    )


class EndProbe:
    """Finds partitions and their end offsets by fetching (see the module docstring).

    Holds one assign-only consumer (no group join, nothing committed) and an admin client for
    metadata, created on first use; call :meth:`close` when done. Not picklable on purpose: it
    lives where it was made.
    """

    def __init__(
        self, client_config: dict[str, str], topics: Iterable[str], timeout_s: float = 2.0, grace_s: float = 0.2,
        metadata_timeout_s: float = 5.0,
    ):
        self.client_config = client_config
        self.topics = list(topics)
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        self.metadata_timeout_s = metadata_timeout_s
        self._consumer: Any = None
        self._admin: Any = None
        self._missed: set[tuple[str, int]] = set()  # no answer in the last probe: waited for next time
        self.behind: dict[tuple[str, int], int] = {}
        """After :meth:`ends`: partitions whose log ends below the offset asked for -> that end."""
        self.cluster_id: str | None = None
        """The cluster id of the last metadata answer (:meth:`partitions`)."""

    def _client(self) -> Any:
        if self._consumer is None:
            from confluent_kafka import Consumer

            self._consumer = Consumer(
                {
                    **self.client_config,
                    "group.id": "pinpipe-speed-probe",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "auto.offset.reset": "latest",
                    "fetch.wait.max.ms": 1,  # an idle partition answers (EOF) at once
                    "fetch.max.bytes": 1024 * 1024,
                    "max.partition.fetch.bytes": 64 * 1024,
                    "queued.max.messages.kbytes": 1024,
                    "log_level": 2,  # not every reconnect of an outage (the source logs it)
                }
            )
        return self._consumer

    def partitions(self) -> dict[str, list[int]]:
        """The partitions of each subscribed topic that exists now (missing topics: none)."""
        # Asked of a client of its own: a metadata request on the probing consumer stalled its
        # next fetch by ~1 s in 3-7 of 120 probes (librdkafka 2.16 on Tansu); apart, none did.
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = AdminClient({**self.client_config, "log_level": 2})
        from confluent_kafka import KafkaException

        try:
            metadata = self._admin.list_topics(timeout=self.metadata_timeout_s)
        except KafkaException as exc:
            raise BrokerUnavailable(f"no metadata within {self.metadata_timeout_s:.0f} s: {exc}") from None
        self.cluster_id = metadata.cluster_id
        found: dict[str, list[int]] = {}
        for topic in self.topics:
            described = metadata.topics.get(topic)
            if described is None or described.error is not None:
                continue
            found[topic] = sorted(described.partitions)
        return found

    def earliest(self, topic: str, partition: int) -> int:
        """The low watermark (ListOffsets EARLIEST, which is right on Tansu too)."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            low, _ = self._client().get_watermark_offsets(
                TopicPartition(topic, partition), timeout=self.metadata_timeout_s
            )
        except KafkaException as exc:
            raise BrokerUnavailable(f"no earliest offset of {topic}[{partition}]: {exc}") from None
        return max(int(low), 0)

    def ends(self, known: OffsetMap) -> OffsetMap:
        """The end offset of every partition in ``known``, probed from the offsets given there.

        ``known`` must hold offsets of existing records or ends (e.g. the last answer); the
        result is never below them.
        """
        from confluent_kafka import KafkaError, TopicPartition

        consumer = self._client()
        wanted = {(t, int(p)): o for t, parts in known.items() for p, o in parts.items()}
        result = {key: offset for key, offset in wanted.items()}
        self.behind = {}
        if not wanted:
            return {}
        pending = set(wanted)

        def cached_high(key: tuple[str, int]) -> int:
            return int(consumer.get_watermark_offsets(TopicPartition(*key), cached=True)[1])

        def take_cached_above(floor: Any) -> None:
            """Answer each pending partition whose cached high watermark is above ``floor(key)``."""
            for key in list(pending):
                high = cached_high(key)
                if high > floor(key):
                    result[key] = high
                    pending.discard(key)

        before = {key: cached_high(key) for key in wanted}
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in wanted.items()])
        deadline = time.monotonic() + self.timeout_s
        try:
            while pending and time.monotonic() < deadline:
                if len(pending) < len(wanted) and not pending & self._missed:
                    # Someone answered: the rest get the grace, not the whole deadline.
                    deadline = min(deadline, time.monotonic() + self.grace_s)
                for message in consumer.consume(len(pending) * 8, timeout=0.005):
                    key = (message.topic(), message.partition())
                    if key not in pending:
                        continue
                    error = message.error()
                    if error is None:
                        result[key] = max(result[key], cached_high(key), message.offset() + 1)
                        pending.discard(key)
                    elif error.code() == KafkaError._PARTITION_EOF:
                        result[key] = max(result[key], int(message.offset()))
                        pending.discard(key)
                    else:
                        log.warning("end probe of %s[%d]: %s", key[0], key[1], error)
                # A high watermark that changed during this probe came with one of its fetch
                # responses: a fresh answer, even before its partition's records reach the front
                # of the queue (a busy partition's records can hold the others back for many
                # consume calls). One that did not change is the previous probe's last fetch:
                # taking it, as this did before, answered one probe late (~550 records behind a
                # partition taking 667 a second, probes 1 s apart).
                take_cached_above(lambda key: max(result[key], before[key]))
            # No fresh answer in time: the last high watermark this consumer saw, when beyond
            # the known end, is still an end of records that exist. Without it a partition
            # whose fetch stalled kept its known end for good (240 records of a 5-minute run
            # left unread once the load stopped; a new consumer read them at once).
            take_cached_above(lambda key: result[key])
            # A fetch answered with a high watermark below where this probe started: the log
            # ends before records it had (restarted, or truncated). Only a value that changed
            # during this probe counts (a fresh fetch response, not one of a previous log).
            for key in pending:
                high = cached_high(key)
                if 0 <= high < wanted[key] and high != before[key]:
                    self.behind[key] = high
        finally:
            consumer.unassign()
        self._missed = pending
        if pending:
            log.debug("end probe: no answer from %d partitions", len(pending))
        ends: OffsetMap = {}
        for (topic, part), offset in result.items():
            ends.setdefault(topic, {})[str(part)] = offset
        return ends

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._admin = None  # an AdminClient has no close: dropping it ends its threads
        if consumer is not None:
            consumer.close()
