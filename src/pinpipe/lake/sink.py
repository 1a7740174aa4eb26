"""The lake sink: every record of the pipeline's topics into raw Parquet, exactly once.

One consumer (group ``settings.lake.sink_group_id``; for a later log of the broker, that name and
``.log<n>``: :func:`pinpipe.lake.logs.sink_group`; no auto-commit) buffers records per
topic-partition. A buffer becomes a file (:mod:`pinpipe.lake.layout` names it by topic,
partition and first offset) when it reaches ``rotate_records`` records or ``rotate_bytes``
value bytes, when the next record belongs to another UTC day, when its first record has waited
``rotate_age_s``, when memory is short, and on rebalance and shutdown. After every round of
files is durable (:mod:`pinpipe.lake.storage`), the offsets after them are committed.

Why this is exactly once (the Secor / Kafka Connect S3 sink method)
-------------------------------------------------------------------
A file is identified by its first offset, and the sink always resumes at a committed offset,
which is always the first offset of the next file. After a crash the restarted sink reads again
from the committed offset C and writes a file named ``...+C.parquet`` in the directory of the
day of record C: the same path as any file written from C before the crash, which it replaces
atomically (rename / single PUT). So a re-written range replaces, never duplicates.

The end of a file is deterministic when it is decided by the records themselves (count, bytes
from the first offset, day change) and time-dependent otherwise (age, memory pressure,
rebalance, shutdown). A crash may leave a time-dependent file [100..180] uncommitted while the
restarted sink writes [100..150] then [151..]: the first replaces the old file (same name), so
offsets 151..180 are only in the new files. That argument breaks only if an uncommitted file
*starting after* 100 could also exist from before the crash, e.g. [181..200] after a
time-dependent [100..180]. The sink prevents that: within one round, a partition's files are
written in offset order and only the last may have a time-dependent end; the round's offsets
are committed synchronously before any further file is written, and a commit that fails for a
reason other than losing the partition stops the sink. The earlier files of a round end on
deterministic boundaries, so a re-run writes them identically (same records; only
``written_at`` differs).

When the broker becomes unreachable, the sink writes out every record it had fetched (so only
records it never fetched can be lost with a broker that keeps its log in memory), writes nothing
more, and waits for the broker: if the same log comes back (same cluster id) it commits and goes
on; if an empty new log comes back, it reports what the old log held beyond the lake
(:mod:`pinpipe.lake.logs`), and reads the new log from its start into files of the next
generation, which never replace the old log's.

Limit: a "zombie" that lost its partitions without noticing (a session timeout while blocked
in storage retries) could still replace a file the new owner wrote. Partitions reported lost
(``on_lost``) are dropped without writing, and ``pinpipe lake verify`` detects duplicates.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import operator
import signal
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import accumulate, groupby, islice

from confluent_kafka import Message

from pinpipe.config import Settings
from pinpipe.events import all_topics
from pinpipe.lake.encode import encode_records, to_parquet_bytes
from pinpipe.lake.errors import SinkStopped, StorageError
from pinpipe.lake.layout import MS_PER_DAY, file_path, table_for_topic
from pinpipe.lake.logs import LogLedger, LogTracker, LostRange, sink_group
from pinpipe.lake.metrics import SinkMetrics
from pinpipe.lake.storage import LakeStorage

log = logging.getLogger("pinpipe.lake")

# Python objects around each buffered record (bytes headers, ints, list slots): counted with
# the value bytes so that the memory cap bounds real memory, not just payload.
RECORD_OVERHEAD_BYTES = 200
# Commit errors meaning "this consumer no longer owns the partitions": drop, do not stop.
_LOST_OWNERSHIP = {"REBALANCE_IN_PROGRESS", "ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID",
                   "FENCED_INSTANCE_ID", "_STATE", "_ASSIGNMENT_LOST"}  # fmt: skip
# Errors meaning "the broker cannot be reached now": wait for it, do not stop.
_UNREACHABLE = {"_TRANSPORT", "_ALL_BROKERS_DOWN", "_TIMED_OUT", "_WAIT_COORD", "_MSG_TIMED_OUT",
                "COORDINATOR_NOT_AVAILABLE", "NOT_COORDINATOR", "COORDINATOR_LOAD_IN_PROGRESS",
                "REQUEST_TIMED_OUT", "_RESOLVE", "_NO_OFFSET"}  # fmt: skip
# How often the sink says it is still waiting for an unreachable broker.
_WAITING_LOG_EVERY_S = 15.0
# How often the sink asks the broker's cluster id while all is well.
LOG_CHECK_EVERY_S = 5.0


@dataclass
class SinkStats:
    """What one run of the sink wrote."""

    records: int = 0
    parquet_bytes: int = 0
    files: int = 0
    commits: int = 0
    lost: list[LostRange] = field(default_factory=list)  # of broker logs that ended meanwhile
    records_by_table: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0


class _Segment:
    """The buffered records of one future file."""

    __slots__ = ("topic", "partition", "day", "first_offset", "values", "keys", "offsets",
                 "timestamps", "value_bytes", "started", "memory")  # fmt: skip

    def __init__(self, topic: str, partition: int, first_offset: int, day: int) -> None:
        self.topic = topic
        self.partition = partition
        self.first_offset = first_offset
        self.day = day
        self.values: list[bytes | None] = []
        self.keys: list[bytes | None] = []
        self.offsets: list[int] = []
        self.timestamps: list[int | None] = []
        self.value_bytes = 0
        self.memory = 0
        self.started = time.monotonic()


TopicPartitionKey = tuple[str, int]

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


class LakeSink:
    """Consume the pipeline's topics into the lake; see the module docstring for the method.

    ``run()`` blocks until ``stop_event`` is set (SIGTERM/SIGINT set it when ``run_sink`` runs
    in the main thread), then writes what is buffered, commits and leaves the group.
    """

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        stop_event: threading.Event | None = None,
        metrics: SinkMetrics | None = None,
        storage: LakeStorage | None = None,
    ) -> None:
        self.settings = settings
        self.lake = settings.lake
        self.bootstrap = bootstrap
        self.stop_event = stop_event or threading.Event()
        self.metrics = metrics or SinkMetrics()
        self.storage = storage or LakeStorage.from_settings(settings)
        self.topics = all_topics(settings.broker.topic_prefix)
        self.stats = SinkStats()
        self._open: dict[TopicPartitionKey, _Segment] = {}
        self._closed: list[_Segment] = []
        self._next: dict[TopicPartitionKey, int] = {}  # assigned partitions: next offset to take
        self._committed: dict[TopicPartitionKey, int] = {}
        self._buffered = 0
        self._failure: BaseException | None = None
        self._consumer = None
        self.logs = LogTracker(LogLedger(self.storage))
        self._uncommitted: dict[TopicPartitionKey, int] = {}  # written while the broker was away
        self._broker_lost_at: float | None = None
        self._retired: list = []  # consumers of earlier logs, closing in the background
        self._consumer_token: object = None

    def positions(self) -> dict[TopicPartitionKey, int]:
        """Next offset the sink will take, per assigned topic-partition (safe from any thread)."""
        return dict(self._next)  # one C-level copy under the GIL

    # --- consumer ---------------------------------------------------------------------------

    def consumer_config(self) -> dict:
        session_ms = self.lake.session_timeout_ms
        return {
            **self.settings.broker.client_config(self.bootstrap),
            "group.id": sink_group(self.lake.sink_group_id, self.logs.generation),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, session_ms // 4),
            "queued.max.messages.kbytes": self.lake.fetch_queue_kbytes,
            "enable.partition.eof": False,
            "client.id": "pinpipe-lake-sink",
            "fetch.wait.max.ms": self.lake.fetch_wait_max_ms,
            "error_cb": self._on_client_error,
        }

    def _new_consumer(self) -> None:
        """A consumer in the group of the log entered (none yet: the first log's), not subscribed."""
        from confluent_kafka import Consumer

        # Errors of a retired consumer (an earlier log's, still closing) are not this one's.
        token = object()
        self._consumer_token = token
        config = {**self.consumer_config(), "error_cb": lambda error: self._on_client_error(error, token)}
        self._consumer = Consumer(config)

    def _subscribe(self) -> None:
        self._new_consumer()
        self._consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def run(self) -> SinkStats:
        """Consume until stopped; returns the stats or raises :class:`SinkStopped`."""
        started = time.monotonic()
        self._new_consumer()  # asks for the cluster id only: the log decides the group
        next_housekeeping = 0.0
        try:
            cluster = self._wait_for_broker()
            if cluster is not None:
                self._enter_log(cluster)
            self._close_consumer(clean=True)  # never subscribed: it leaves no group
            self._subscribe()
            log.info("lake sink: %s -> %s (group %s)", self.topics, self.storage.display,
                     self.consumer_config()["group.id"])  # fmt: skip
            next_log_check = time.monotonic() + LOG_CHECK_EVERY_S
            while not self.stop_event.is_set():
                messages = self._consumer.consume(self.lake.consume_batch, 0.25)
                if self._broker_lost_at is not None:
                    self._hold_fetching()  # before the broker can come back
                self._raise_failure()
                if messages:
                    self._add(messages)
                now = time.monotonic()
                if now >= next_housekeeping:
                    self._close_aged(now)
                    self._update_lag()
                    next_housekeeping = now + 0.25
                if now >= next_log_check and self._broker_lost_at is None:
                    # A backstop: a broker restarted faster than the sink noticed it was gone.
                    next_log_check = now + LOG_CHECK_EVERY_S
                    cluster = self._cluster_id(timeout=1.0)
                    if cluster is not None and not self._same_log(cluster):
                        log.error("lake sink: the broker's log changed under the sink (cluster %s)",
                                  cluster)  # fmt: skip
                        self._broker_lost_at = now
                if self._closed:
                    self._flush_round()
                if self._broker_lost_at is not None:
                    self._ride_out_broker_loss()
            self._close_all()
            self._flush_round()
        except BaseException:
            self._close_consumer(clean=False)
            raise
        self._close_consumer(clean=True)
        self._raise_failure()
        self.stats.elapsed_s = time.monotonic() - started
        return self.stats

    def _close_consumer(self, clean: bool) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        if not clean:
            # Drop buffers first: the revoke during close must not write after a failure.
            self._open.clear()
            self._closed.clear()
            self._next.clear()
        try:
            consumer.close()
        except Exception as exc:  # leaving the group is best effort; offsets are committed
            log.warning("lake sink: closing the consumer failed: %s", exc)

    def _retire_consumer(self) -> None:
        """Let the old log's consumer go without waiting: its ``close`` can block for long
        against a broker that does not know its group. Its callbacks are ignored from now on."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        self._retired.append(consumer)

        def close() -> None:
            with contextlib.suppress(Exception):
                consumer.close()

        threading.Thread(target=close, name="lake-sink-retired-consumer", daemon=True).start()

    def _ignored(self, consumer) -> bool:
        return any(consumer is retired for retired in self._retired)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure = self._failure
            raise failure if isinstance(failure, SinkStopped) else SinkStopped(str(failure))

    def _on_assign(self, consumer, partitions) -> None:
        if self._ignored(consumer):
            return
        if self.logs.current is not None and not self._same_log(self._cluster_id(2.0, consumer)):
            # Assigned by a broker with another (empty) log, or none: take nothing from it
            # before the log is entered with a consumer of its own (_ride_out_broker_loss).
            with contextlib.suppress(Exception):
                consumer.pause(partitions)
            if self._broker_lost_at is None:
                self._broker_lost_at = time.monotonic()
                self.metrics.broker_up.set(0)
            log.warning("lake sink: an assignment from another log of the broker, held")
            return
        try:
            committed = consumer.committed(partitions, timeout=10)
        except Exception as exc:
            log.warning("lake sink: reading committed offsets failed (%s); trusting the consumer", exc)
            committed = partitions
        for tp in committed:
            key = (tp.topic, tp.partition)
            self._next[key] = max(tp.offset, 0)
            if tp.offset >= 0:
                self._committed[key] = tp.offset
        log.info("lake sink: assigned %s", sorted(self._next))

    def _on_revoke(self, consumer, partitions) -> None:
        """Write what is buffered for the revoked partitions and commit, then let them go."""
        if self._ignored(consumer):
            return
        keys = {(tp.topic, tp.partition) for tp in partitions}
        try:
            if self._failure is None:
                for key in keys:
                    self._close(key)
                self._flush_round()
        except BaseException as exc:  # raised inside librdkafka's callback: report in run()
            self._failure = exc
        finally:
            self._forget(keys)
        log.info("lake sink: revoked %s", sorted(keys))

    def _on_lost(self, consumer, partitions) -> None:
        """Another member may own these now: drop their buffers, write nothing. Unless the
        broker is gone (then no other member can read them): write them out, as a crash after
        writing and before committing would have (no commit follows; see the module docstring)."""
        if self._ignored(consumer):
            return
        keys = {(tp.topic, tp.partition) for tp in partitions}
        if self._failure is None and not self._same_log(self._cluster_id(1.0, consumer)):
            if self._broker_lost_at is None:
                self._broker_lost_at = time.monotonic()
                self.metrics.broker_up.set(0)
            try:
                for key in keys:
                    self._close(key)
                self._uncommitted.update(self._write_closed())
            except BaseException as exc:  # raised inside librdkafka's callback: report in run()
                self._failure = exc
        self._forget(keys)
        log.warning("lake sink: lost %s; their buffered records are left to the new owner",
                    sorted(keys))  # fmt: skip

    def _forget(self, keys: set[TopicPartitionKey]) -> None:
        for key in keys:
            segment = self._open.pop(key, None)
            if segment is not None:
                self._buffered -= segment.memory
            self._next.pop(key, None)
            self._committed.pop(key, None)
            for gauge in (self.metrics.lag, self.metrics.position):
                try:
                    gauge.remove(key[0], str(key[1]))
                except KeyError:
                    pass
        kept = [segment for segment in self._closed if (segment.topic, segment.partition) not in keys]
        for segment in self._closed:
            if (segment.topic, segment.partition) in keys:
                self._buffered -= segment.memory
        self._closed = kept

    def _consumer_error(self, error) -> None:
        self.metrics.errors.labels("consumer").inc()
        if error.fatal():
            raise SinkStopped(f"fatal consumer error: {error}")
        log.warning("lake sink: consumer error: %s", error)

    # --- the broker going away -------------------------------------------------------------

    def _on_client_error(self, error, token: object = None) -> None:
        """librdkafka's error callback (inside ``consume``): note that the broker is gone."""
        if token is not None and token is not self._consumer_token:
            return
        if error.name() == "_ALL_BROKERS_DOWN" and self._broker_lost_at is None:
            self._broker_lost_at = time.monotonic()
            self.metrics.broker_up.set(0)
            self.metrics.errors.labels("broker").inc()

    def _cluster_id(self, timeout: float, consumer=None) -> str | None:
        from confluent_kafka import KafkaException

        consumer = consumer or self._consumer
        if consumer is None:
            return None
        try:
            return consumer.list_topics(timeout=timeout).cluster_id or ""
        except KafkaException:
            return None

    def _same_log(self, cluster: str | None) -> bool:
        """False when the broker does not answer or answers with another log's cluster id."""
        current = self.logs.current
        return cluster is not None and (current is None or cluster == current.cluster_id)

    def _hold_fetching(self) -> None:
        """Pause every partition: a broker that comes back may hold another, empty log, whose
        records must not be taken for the old log's (the cluster id is checked first)."""
        consumer = self._consumer
        if consumer is not None:
            with contextlib.suppress(Exception):
                consumer.pause(consumer.assignment())

    def _wait_for_broker(self) -> str | None:
        """The cluster id, once the broker answers (None if stopped first)."""
        since = time.monotonic()
        said = since
        while not self.stop_event.is_set():
            cluster = self._cluster_id(timeout=2.0)
            if cluster is not None:
                self.metrics.broker_up.set(1)
                return cluster
            if time.monotonic() - said >= _WAITING_LOG_EVERY_S:
                said = time.monotonic()
                log.warning("lake sink: the broker has not answered for %.0f s; waiting for it",
                            said - since)  # fmt: skip
        return None

    def _enter_log(self, cluster: str) -> None:
        """Read the log of ``cluster``; a new log means the one before ended: report its loss."""
        positions = dict(self._next)
        lost = self._with_retries(lambda: self.logs.enter(cluster, positions))
        self.metrics.log_generation.set(self.logs.generation)
        for entry in lost:
            self.metrics.records_lost.labels(entry.topic).inc(entry.records)
        self.stats.lost.extend(lost)
        if lost:
            total = sum(entry.records for entry in lost)
            log.error("lake sink: the broker's log was replaced by an empty one (cluster %s, log %d):"
                      " at least %d acknowledged records of the earlier log never reached the lake:"
                      " %s", cluster, self.logs.generation, total,
                      "; ".join(entry.describe() for entry in lost))  # fmt: skip
        elif self.logs.generation:
            log.warning("lake sink: the broker's log was replaced by an empty one (cluster %s, "
                        "log %d); everything it had acknowledged is in the lake", cluster,
                        self.logs.generation)  # fmt: skip

    def _ride_out_broker_loss(self) -> None:
        """Write out what is fetched, then wait for the broker: the same log again (commit,
        go on) or a new, empty one (report the loss, start reading it from its beginning)."""
        # Records librdkafka fetched but consume() has not handed out yet are fetched too.
        while self._consumer is not None and (messages := self._consumer.consume(self.lake.consume_batch, 0)):
            self._add(messages)
        fetched = sum(len(s.offsets) for s in [*self._open.values(), *self._closed])
        log.warning("lake sink: the broker is unreachable; writing out the %d records fetched", fetched)
        self._close_all()
        self._uncommitted.update(self._write_closed())
        lost_at = self._broker_lost_at or time.monotonic()
        cluster = self._wait_for_broker()
        if cluster is None:
            return  # stopped: what was fetched is written; the commit waits for the next start
        self._broker_lost_at = None
        if self._same_log(cluster):
            log.info("lake sink: the broker answers again after %.1f s", time.monotonic() - lost_at)
            with contextlib.suppress(Exception):
                self._consumer.resume(self._consumer.assignment())
            pending, self._uncommitted = self._uncommitted, {}
            self._commit(pending)
            return
        self._enter_log(cluster)
        self._uncommitted.clear()  # offsets of the old log mean nothing in the new one
        self._forget(set(self._next))
        self._retire_consumer()
        ensure_pipeline_topics(self.settings, self.bootstrap)  # the new log has none yet
        self._subscribe()

    # --- buffering --------------------------------------------------------------------------

    def _add(self, messages) -> None:
        """Buffer a batch; a segment closed by count, bytes or day change joins ``_closed``.

        The batch is taken a topic-partition run at a time (librdkafka hands out each
        partition's records in fetched runs): a run with increasing offsets, broker timestamps
        and one UTC day is appended in bulk (:meth:`_add_run`); any other run goes through the
        per-record loop (:meth:`_add_records`). Both cut files at the same records.
        """
        if any(map(Message.error, messages)):  # rare: report them, buffer the rest
            for message in messages:
                if message.error() is not None:
                    self._consumer_error(message.error())
            messages = [message for message in messages if message.error() is None]
        for topic, partition, start, end in _runs(messages):
            run = messages[start:end]
            if not self._add_run((topic, partition), run):
                self._add_records(run)
        self.metrics.buffered_bytes.set(self._buffered)
        self.metrics.consumed.inc(len(messages))

    def _add_run(self, key: TopicPartitionKey, run: list) -> bool:
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
        segment = self._open.get(key)
        if segment is not None and segment.day != day:
            self._close(key)  # the whole run belongs to another day
        values = list(map(Message.value, run))
        try:
            sizes = list(map(len, values))
        except TypeError:  # a null value (tombstone) counts as 0 bytes
            sizes = [len(value) if value is not None else 0 for value in values]
        self._append(key, day, values, list(map(Message.key, run)), offsets, timestamps, sizes)
        return True

    def _append(self, key: TopicPartitionKey, day: int, values: list, keys: list,
                offsets: list[int], timestamps: list[int], sizes: list[int]) -> None:
        """Append records of one day to the key's segments, cutting files exactly where the
        per-record loop would: after the record that reaches ``rotate_records`` or
        ``rotate_bytes``, and relieving memory after the record that crosses the cap."""
        rotate_records = self.lake.rotate_records
        rotate_bytes = self.lake.rotate_bytes
        cap = self.lake.max_buffer_bytes
        cumulative = list(accumulate(sizes, initial=0))  # value bytes of the first j records
        total = len(offsets)
        start = 0
        while start < total:
            segment = self._open.get(key)
            if segment is None:
                segment = self._open[key] = _Segment(key[0], key[1], offsets[start], day)
            base = cumulative[start]
            # The records [start, end) go in; end is the first record count at which a limit hits.
            end = min(total, start + rotate_records - len(segment.offsets))
            end = min(end, bisect_left(cumulative, rotate_bytes - segment.value_bytes + base,
                                       start + 1, end + 1))  # fmt: skip
            memory_target = cap - self._buffered + base + start * RECORD_OVERHEAD_BYTES
            end = min(end, bisect_right(range(end + 1), memory_target, start + 1, end + 1,
                                        key=lambda j: cumulative[j] + j * RECORD_OVERHEAD_BYTES))
            value_bytes = cumulative[end] - base
            memory = value_bytes + (end - start) * RECORD_OVERHEAD_BYTES
            segment.values += values[start:end]
            segment.keys += keys[start:end]
            segment.offsets += offsets[start:end]
            segment.timestamps += timestamps[start:end]
            segment.value_bytes += value_bytes
            segment.memory += memory
            self._buffered += memory
            self._next[key] = offsets[end - 1] + 1
            if len(segment.offsets) >= rotate_records or segment.value_bytes >= rotate_bytes:
                self._close(key)
            if self._buffered > cap:
                self._relieve_memory()
                self._flush_round()
                if key not in self._next:  # the commit found the partition lost
                    return
            start = end

    def _add_records(self, messages) -> None:
        """The per-record loop: any records, in order (re-deliveries, missing timestamps,
        a day change inside a run)."""
        rotate_records = self.lake.rotate_records
        rotate_bytes = self.lake.rotate_bytes
        segments = self._open
        expected = self._next
        buffered = 0
        headroom = self.lake.max_buffer_bytes - self._buffered
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
            segment = segments.get(key)
            if segment is None:
                # A record without a timestamp opens a file in 1970-01-01: deterministic.
                day = timestamp // MS_PER_DAY if timestamp is not None else 0
                segment = segments[key] = _Segment(key[0], key[1], offset, day)
            elif timestamp is not None and timestamp // MS_PER_DAY != segment.day:
                self._closed.append(segments.pop(key))
                segment = segments[key] = _Segment(key[0], key[1], offset, timestamp // MS_PER_DAY)
            size = len(value) if value is not None else 0
            segment.values.append(value)
            segment.keys.append(message.key())
            segment.offsets.append(offset)
            segment.timestamps.append(timestamp)
            segment.value_bytes += size
            segment.memory += size + RECORD_OVERHEAD_BYTES
            buffered += size + RECORD_OVERHEAD_BYTES
            expected[key] = offset + 1
            if len(segment.offsets) >= rotate_records or segment.value_bytes >= rotate_bytes:
                self._closed.append(segments.pop(key))
            if buffered > headroom:  # checked per record: one batch may be large
                self._buffered += buffered
                buffered = 0
                self._relieve_memory()
                self._flush_round()
                headroom = self.lake.max_buffer_bytes - self._buffered
        self._buffered += buffered

    def _close(self, key: TopicPartitionKey) -> None:
        segment = self._open.pop(key, None)
        if segment is not None:
            self._closed.append(segment)

    def _close_all(self) -> None:
        for key in list(self._open):
            self._close(key)

    def _close_aged(self, now: float) -> None:
        limit = self.lake.rotate_age_s
        for key, segment in list(self._open.items()):
            if now - segment.started >= limit:
                self._close(key)

    def _relieve_memory(self) -> None:
        """Close the biggest buffers until at most half the memory cap is buffered."""
        target = self.lake.max_buffer_bytes // 2
        remaining = self._buffered - sum(segment.memory for segment in self._closed)
        for key, segment in sorted(self._open.items(), key=lambda item: -item[1].memory):
            if remaining <= target:
                break
            self._close(key)
            remaining -= segment.memory

    # --- writing ----------------------------------------------------------------------------

    def _flush_round(self) -> None:
        """Write every closed segment (in order), then commit the offsets after them (and any
        left uncommitted while the broker was away)."""
        if not self._closed and not self._uncommitted:
            return
        commits = {**self._uncommitted, **self._write_closed()}
        self._uncommitted = {}
        self._commit(commits)

    def _write_closed(self) -> dict[TopicPartitionKey, int]:
        """Write every closed segment (in order); the offsets to commit after them."""
        segments, self._closed = self._closed, []
        commits: dict[TopicPartitionKey, int] = {}
        try:
            for segment in segments:
                self._write(segment)
                self._buffered -= segment.memory
                commits[(segment.topic, segment.partition)] = segment.offsets[-1] + 1
        finally:
            self.metrics.buffered_bytes.set(self._buffered)
        return commits

    def _write(self, segment: _Segment) -> None:
        started = time.perf_counter()
        table_name = table_for_topic(segment.topic)
        table = encode_records(
            segment.topic, segment.partition, segment.values, segment.keys, segment.offsets,
            segment.timestamps, datetime.now(timezone.utc),
        )  # fmt: skip
        data = to_parquet_bytes(table)
        del table
        path = file_path(table_name, segment.day, segment.topic, segment.partition,
                         segment.first_offset, self.logs.generation)  # fmt: skip
        replaced = self._with_retries(lambda: self.storage.write_atomic(path, data))
        rows = len(segment.offsets)
        if replaced:  # written before a crash or by a zombie, never committed
            log.info("lake sink: replaced %s (offsets %d..%d re-written)", path,
                     segment.first_offset, segment.offsets[-1])  # fmt: skip
        self.metrics.flush_seconds.observe(time.perf_counter() - started)
        self.metrics.records.labels(table_name).inc(rows)
        self.metrics.bytes.labels(table_name).inc(data.size)
        self.metrics.files.labels(table_name).inc()
        stats = self.stats
        stats.records += rows
        stats.parquet_bytes += data.size
        stats.files += 1
        stats.records_by_table[table_name] = stats.records_by_table.get(table_name, 0) + rows

    def _with_retries(self, action):
        deadline = time.monotonic() + self.lake.storage_retry_s
        delay = 0.2
        while True:
            try:
                return action()
            except StorageError as exc:
                if not exc.transient:
                    self.metrics.errors.labels("storage").inc()
                    raise SinkStopped(f"terminal storage error, nothing committed past it: {exc}") from exc
                if time.monotonic() + delay > deadline:
                    self.metrics.errors.labels("storage").inc()
                    raise SinkStopped(
                        f"storage still failing after {self.lake.storage_retry_s:.0f} s: {exc}"
                    ) from exc
                self.metrics.errors.labels("storage_retry").inc()
                log.warning("lake sink: %s; retrying in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        """Commit synchronously; losing the partitions drops them, an unreachable broker keeps
        them for after it is back (:meth:`_ride_out_broker_loss`), anything else stops."""
        from confluent_kafka import KafkaException, TopicPartition

        if not offsets or self._consumer is None:
            return
        partitions = [TopicPartition(topic, partition, offset)
                      for (topic, partition), offset in offsets.items()]  # fmt: skip
        last_error: Exception | None = None
        for attempt in range(3):
            try:
                result = self._consumer.commit(offsets=partitions, asynchronous=False)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if error is not None and hasattr(error, "name") and error.name() in _LOST_OWNERSHIP:
                    self.metrics.errors.labels("commit").inc()
                    log.warning("lake sink: commit refused (%s): partitions lost", error)
                    self._forget(set(offsets))
                    return
                if error is not None and hasattr(error, "name") and error.name() in _UNREACHABLE:
                    self._commit_later(offsets, error)
                    return
                last_error = exc
                time.sleep(0.2 * (attempt + 1))
                continue
            failed = [tp for tp in result or [] if tp.error is not None]
            if not failed:
                self.stats.commits += 1
                self._committed.update(offsets)
                return
            if failed[0].error.name() in _UNREACHABLE:
                self._commit_later(offsets, failed[0].error)
                return
            last_error = KafkaException(failed[0].error)
            time.sleep(0.2 * (attempt + 1))
        self.metrics.errors.labels("commit").inc()
        raise SinkStopped(f"committing offsets failed; files past the last commit will be "
                          f"re-written on restart: {last_error}")  # fmt: skip

    def _commit_later(self, offsets: dict[TopicPartitionKey, int], error) -> None:
        # Nothing more is written before this commit succeeds: the exactly-once argument holds.
        log.warning("lake sink: commit failed (%s): the broker is unreachable", error)
        self._uncommitted.update(offsets)
        if self._broker_lost_at is None:
            self._broker_lost_at = time.monotonic()
            self.metrics.broker_up.set(0)

    # --- lag --------------------------------------------------------------------------------

    def _update_lag(self) -> None:
        from confluent_kafka import TopicPartition

        consumer = self._consumer
        if consumer is None:
            return
        for key, position in list(self._next.items()):
            # up's drain compares it with the partitions' ends: restart-proof, unlike counters.
            self.metrics.position.labels(key[0], str(key[1])).set(position)
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
            except Exception:  # noqa: BLE001 - no fetch response yet
                continue
            if high is None or high < 0:
                continue
            self.logs.saw(key, high)
            base = self._committed.get(key, max(low, 0))
            self.metrics.lag.labels(key[0], str(key[1])).set(max(high - base, 0))
        self.logs.save_seen()


def ensure_pipeline_topics(settings: Settings, bootstrap: str) -> None:
    """Create the pipeline's topics if missing (best effort: subscribing works without)."""
    from pinpipe.services.topics import TopicError, ensure_pipeline_topics

    try:
        ensure_pipeline_topics(settings, bootstrap)
    except TopicError as exc:
        log.warning("lake sink: could not ensure topics (%s); subscribing anyway", exc)


def run_sink(
    settings: Settings,
    bootstrap: str,
    stop_event: threading.Event | None = None,
    metrics_port: int | None = None,
) -> SinkStats:
    """Run the lake sink until ``stop_event`` is set (or SIGTERM/SIGINT in the main thread).

    Creates the pipeline's topics if missing (best effort). Raises :class:`SinkStopped` on a
    terminal error, after which nothing past the last durable file has been committed.
    """
    stop_event = stop_event or threading.Event()
    ensure_pipeline_topics(settings, bootstrap)
    metrics = SinkMetrics()
    if metrics_port is not None:
        metrics.serve(metrics_port)
    sink = LakeSink(settings, bootstrap, stop_event, metrics)
    owns_process = threading.current_thread() is threading.main_thread()
    previous: dict[int, object] = {}
    if owns_process:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: stop_event.set())
    try:
        with _collector_tuned() if owns_process else contextlib.nullcontext():
            return sink.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _collector_tuned(young_threshold: int = 100_000) -> Iterator[None]:
    """Keep Python's cycle collector from walking every consumed message (process-wide).

    Each batch allocates ``consume_batch`` Message objects that the collector tracks; with the
    default threshold (700 allocations) it ran ~15 young collections per batch, each walking
    messages still alive, and promoted them to older generations that it walked again. The
    messages die by reference counting once a batch is buffered, so collecting every
    ``young_threshold`` allocations loses nothing; ``gc.freeze`` leaves the objects made at
    start-up (modules, settings) out of full collections. Measured: 2.4 instead of 2.9-3.1 CPU
    µs per record (bench/bench_lake_sink.py). Only when the sink owns the process (run_sink in
    the main thread), like the signal handlers.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(young_threshold, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
