"""The sink contract: buffer records per topic-partition, cut them into batches, write them.

A sink built on :class:`BatchingSink` is told which partitions it owns
(:meth:`~BatchingSink.assign`) and is given consumed records (:meth:`~BatchingSink.add`). It
buffers them per topic-partition and cuts the buffer into a :class:`Batch`, one future file,
when it reaches ``rotate_records`` records or ``rotate_bytes`` value bytes, or when the next
record belongs to another UTC day (:mod:`pinpipe.lake.layout` files by day). These ends are
*deterministic*: the records decide them, so a re-run from the same first offset cuts the same
batch. The owner cuts on time and events too (:meth:`~BatchingSink.cut_aged` after
``rotate_age_s``, :meth:`~BatchingSink.cut` on rebalance and shutdown), and the buffer cuts its
biggest batches when ``max_buffer_bytes`` is crossed; those ends are time-dependent.

At a checkpoint the owner calls :meth:`~BatchingSink.flush`: every cut batch is written, in
order, by the subclass's :meth:`~BatchingSink.write`, and the offsets after them are returned:
what became durable, so the offsets safe to commit. The owner commits them before anything
else is written (:mod:`pinpipe.lake.sink` says why that makes the lake exactly once).
"""

from __future__ import annotations

import operator
import time
from abc import ABC, abstractmethod
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from itertools import accumulate, groupby, islice

from confluent_kafka import Message

from pinpipe.config.lake import LakeSettings
from pinpipe.lake.layout import MS_PER_DAY
from pinpipe.lake.metrics import SinkMetrics

# Python objects around each buffered record (bytes headers, ints, list slots): counted with
# the value bytes so that the memory cap bounds real memory, not just payload.
RECORD_OVERHEAD_BYTES = 200

TopicPartitionKey = tuple[str, int]


class Batch:
    """The buffered records of one future file: one topic-partition, one UTC day, consecutive
    records from ``first_offset`` (columns as lists, in offset order)."""

    __slots__ = ("topic", "partition", "day", "first_offset", "values", "keys", "offsets",
                 "timestamps", "value_bytes", "started", "memory")  # fmt: skip

    def __init__(self, topic: str, partition: int, first_offset: int, day: int) -> None:
        self.topic = topic
        self.partition = partition
        self.first_offset = first_offset
        self.day = day  # days since 1970-01-01 (UTC)
        self.values: list[bytes | None] = []
        self.keys: list[bytes | None] = []
        self.offsets: list[int] = []
        self.timestamps: list[int | None] = []  # broker timestamps, ms (None if missing)
        self.value_bytes = 0
        self.memory = 0  # value bytes + RECORD_OVERHEAD_BYTES per record
        self.started = time.monotonic()


def _runs(messages: list) -> list[tuple[str, int, int, int]]:
    """(topic, partition, start, end) of each run of consecutive messages of one partition."""
    topics = list(map(Message.topic, messages))
    runs = []
    start = 0
    for partition, group in groupby(map(Message.partition, messages)):
        end = start + len(list(group))
        topic = topics[start]
        if topics[start:end].count(topic) == end - start:
            runs.append((topic, partition, start, end))
        else:  # the same partition number in two topics, back to back
            for topic, same in groupby(topics[start:end]):
                length = len(list(same))
                runs.append((topic, partition, start, start + length))
                start += length
        start = end
    return runs


class BatchingSink(ABC):
    """Buffer records per topic-partition, cut them into batches, write them at a checkpoint.

    A subclass implements :meth:`write` (where and how one batch becomes durable). The owner
    calls :meth:`assign` / :meth:`forget` as partitions come and go, :meth:`add` with each
    consumed batch, :meth:`cut` / :meth:`cut_aged` for time-dependent ends, and :meth:`flush`
    at a checkpoint, committing what it returns.

    ``checkpoint`` is called when ``add`` crosses ``max_buffer_bytes`` in the middle of a batch,
    after the biggest buffers are cut: it must flush and commit before ``add`` goes on (nothing
    more may be written before the commit). Without one, ``add`` flushes and the offsets are
    returned by the next :meth:`flush`.
    """

    def __init__(self, settings: LakeSettings, metrics: SinkMetrics | None = None,
                 checkpoint: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.metrics = metrics or SinkMetrics()
        self._checkpoint = checkpoint or self._flush_for_later
        self._open: dict[TopicPartitionKey, Batch] = {}
        self._closed: list[Batch] = []
        self._next: dict[TopicPartitionKey, int] = {}  # assigned partitions: next offset to take
        self._durable: dict[TopicPartitionKey, int] = {}  # flushed without a checkpoint
        self._buffered = 0

    # --- the contract -----------------------------------------------------------------------

    @abstractmethod
    def write(self, batch: Batch) -> None:
        """Make one batch durable (raise to stop: nothing after the last flush is committed).

        Called by :meth:`flush` for each cut batch, in offset order per partition. A batch
        written again after a crash has the same first offset and must replace the earlier
        write, never add to it."""

    def flush(self) -> dict[TopicPartitionKey, int]:
        """Write every cut batch (in order); the offset after each partition's last one: what
        is durable now, and so safe to commit. Raises what :meth:`write` raises."""
        durable, self._durable = self._durable, {}
        batches, self._closed = self._closed, []
        try:
            for batch in batches:
                self.write(batch)
                self._buffered -= batch.memory
                durable[(batch.topic, batch.partition)] = batch.offsets[-1] + 1
        finally:
            self.metrics.buffered_bytes.set(self._buffered)
        return durable

    def add(self, messages: list[Message]) -> None:
        """Buffer a consumed batch of records (without errors), in consumption order; records
        of partitions not assigned, or at offsets already taken, are skipped.

        The batch is taken a topic-partition run at a time (librdkafka hands out each
        partition's records in fetched runs): a run with increasing offsets, broker timestamps
        and one UTC day is appended in bulk (:meth:`add_run`); any other run goes through the
        per-record loop (:meth:`add_records`). Both cut batches at the same records.
        """
        for topic, partition, start, end in _runs(messages):
            run = messages[start:end]
            if not self.add_run((topic, partition), run):
                self.add_records(run)
        self.metrics.buffered_bytes.set(self._buffered)

    # --- partitions -------------------------------------------------------------------------

    def assign(self, positions: dict[TopicPartitionKey, int]) -> None:
        """Own these partitions from now on, taking records from the given offsets."""
        self._next.update(positions)

    def positions(self) -> dict[TopicPartitionKey, int]:
        """Next offset to take, per assigned topic-partition (safe from any thread)."""
        return dict(self._next)  # one C-level copy under the GIL

    def forget(self, keys: Iterable[TopicPartitionKey]) -> None:
        """Let these partitions go: their buffered records are dropped, never written."""
        keys = set(keys)
        for key in keys:
            batch = self._open.pop(key, None)
            if batch is not None:
                self._buffered -= batch.memory
            self._next.pop(key, None)
        kept = [batch for batch in self._closed if (batch.topic, batch.partition) not in keys]
        for batch in self._closed:
            if (batch.topic, batch.partition) in keys:
                self._buffered -= batch.memory
        self._closed = kept

    def clear(self) -> None:
        """Drop every buffer and partition (after a failure: nothing more is written)."""
        self._open.clear()
        self._closed.clear()
        self._next.clear()

    # --- cutting ----------------------------------------------------------------------------

    def cut(self, keys: Iterable[TopicPartitionKey] | None = None) -> None:
        """End the open batches of ``keys`` (all if None) here; they are written by the next
        :meth:`flush`."""
        for key in list(self._open) if keys is None else keys:
            batch = self._open.pop(key, None)
            if batch is not None:
                self._closed.append(batch)

    def cut_aged(self, now: float) -> None:
        """End the open batches whose first record has waited ``rotate_age_s`` by ``now``
        (``time.monotonic()``)."""
        limit = self.settings.rotate_age_s
        self.cut([key for key, batch in self._open.items() if now - batch.started >= limit])

    @property
    def has_cut(self) -> bool:
        """Whether cut batches wait for :meth:`flush`."""
        return bool(self._closed)

    def buffered_records(self) -> int:
        """Records buffered, open or cut."""
        return sum(len(batch.offsets) for batch in [*self._open.values(), *self._closed])

    def _relieve_memory(self) -> None:
        """Cut the biggest buffers until at most half the memory cap is buffered."""
        target = self.settings.max_buffer_bytes // 2
        remaining = self._buffered - sum(batch.memory for batch in self._closed)
        for key, batch in sorted(self._open.items(), key=lambda item: -item[1].memory):
            if remaining <= target:
                break
            self.cut([key])
            remaining -= batch.memory

    def _flush_for_later(self) -> None:
        self._durable.update(self.flush())

    # --- the two ways in --------------------------------------------------------------------

    def add_run(self, key: TopicPartitionKey, run: list[Message]) -> bool:
        """Append one topic-partition's run of records in bulk; False if it needs the
        per-record loop (offsets not increasing or already taken, a record without broker
        timestamp, or records of two UTC days)."""
        expected = self._next.get(key)
        if expected is None:
            return True  # not ours (any more)
        offsets = list(map(Message.offset, run))
        # librdkafka reports a missing timestamp as -1: any value <= 0 takes the slow path.
        timestamps = [message.timestamp()[1] for message in run]
        earliest = min(timestamps)
        day = earliest // MS_PER_DAY
        if (
            earliest <= 0
            or max(timestamps) // MS_PER_DAY != day
            or offsets[0] < expected
            or not all(map(operator.lt, offsets, islice(offsets, 1, None)))
        ):
            return False
        batch = self._open.get(key)
        if batch is not None and batch.day != day:
            self.cut([key])  # the whole run belongs to another day
        values = list(map(Message.value, run))
        try:
            sizes = list(map(len, values))
        except TypeError:  # a null value (tombstone) counts as 0 bytes
            sizes = [len(value) if value is not None else 0 for value in values]
        self._append(key, day, values, list(map(Message.key, run)), offsets, timestamps, sizes)
        return True

    def _append(self, key: TopicPartitionKey, day: int, values: list, keys: list,
                offsets: list[int], timestamps: list[int], sizes: list[int]) -> None:
        """Append records of one day to the key's batches, cutting exactly where the
        per-record loop would: after the record that reaches ``rotate_records`` or
        ``rotate_bytes``, and relieving memory after the record that crosses the cap."""
        rotate_records = self.settings.rotate_records
        rotate_bytes = self.settings.rotate_bytes
        cap = self.settings.max_buffer_bytes
        cumulative = list(accumulate(sizes, initial=0))  # value bytes of the first j records
        total = len(offsets)
        start = 0
        while start < total:
            batch = self._open.get(key)
            if batch is None:
                batch = self._open[key] = Batch(key[0], key[1], offsets[start], day)
            base = cumulative[start]
            # The records [start, end) go in; end is the first record count at which a limit hits.
            end = min(total, start + rotate_records - len(batch.offsets))
            end = min(end, bisect_left(cumulative, rotate_bytes - batch.value_bytes + base,
                                       start + 1, end + 1))  # fmt: skip
            memory_target = cap - self._buffered + base + start * RECORD_OVERHEAD_BYTES
            end = min(end, bisect_right(range(end + 1), memory_target, start + 1, end + 1,
                                        key=lambda j: cumulative[j] + j * RECORD_OVERHEAD_BYTES))
            value_bytes = cumulative[end] - base
            memory = value_bytes + (end - start) * RECORD_OVERHEAD_BYTES
            batch.values += values[start:end]
            batch.keys += keys[start:end]
            batch.offsets += offsets[start:end]
            batch.timestamps += timestamps[start:end]
            batch.value_bytes += value_bytes
            batch.memory += memory
            self._buffered += memory
            self._next[key] = offsets[end - 1] + 1
            if len(batch.offsets) >= rotate_records or batch.value_bytes >= rotate_bytes:
                self.cut([key])
            if self._buffered > cap:
                self._relieve_memory()
                self._checkpoint()
                if key not in self._next:  # the commit found the partition lost
                    return
            start = end

    def add_records(self, messages: list[Message]) -> None:
        """The per-record loop: any records, in order (re-deliveries, missing timestamps,
        a day change inside a run)."""
        rotate_records = self.settings.rotate_records
        rotate_bytes = self.settings.rotate_bytes
        batches = self._open
        expected = self._next
        buffered = 0
        headroom = self.settings.max_buffer_bytes - self._buffered
        for message in messages:
            key = (message.topic(), message.partition())
            offset = message.offset()
            next_offset = expected.get(key)
            if next_offset is None or offset < next_offset:
                continue  # not ours (any more), or already taken
            value = message.value()
            timestamp_type, timestamp = message.timestamp()
            if not timestamp_type:  # TIMESTAMP_NOT_AVAILABLE
                timestamp = None
            batch = batches.get(key)
            if batch is None:
                # A record without a timestamp opens a file in 1970-01-01: deterministic.
                day = timestamp // MS_PER_DAY if timestamp is not None else 0
                batch = batches[key] = Batch(key[0], key[1], offset, day)
            elif timestamp is not None and timestamp // MS_PER_DAY != batch.day:
                self._closed.append(batches.pop(key))
                batch = batches[key] = Batch(key[0], key[1], offset, timestamp // MS_PER_DAY)
            size = len(value) if value is not None else 0
            batch.values.append(value)
            batch.keys.append(message.key())
            batch.offsets.append(offset)
            batch.timestamps.append(timestamp)
            batch.value_bytes += size
            batch.memory += size + RECORD_OVERHEAD_BYTES
            buffered += size + RECORD_OVERHEAD_BYTES
            expected[key] = offset + 1
            if len(batch.offsets) >= rotate_records or batch.value_bytes >= rotate_bytes:
                self._closed.append(batches.pop(key))
            if buffered > headroom:  # checked per record: one batch may be large
                self._buffered += buffered
                buffered = 0
                self._relieve_memory()
                self._checkpoint()
                headroom = self.settings.max_buffer_bytes - self._buffered
        self._buffered += buffered
