"""The lake sink's consumer/commit loop around a :class:`~pinpipe.lake.parquet.ParquetSink`.

:class:`LakeSink` subscribes to the pipeline's topics (no auto-commit), tells the buffer which
partitions it owns and from which offsets, hands it every consumed batch, cuts batches on age,
rebalance and shutdown, flushes and commits what the flush made durable, synchronously, before
anything else is written (:mod:`pinpipe.lake.sink` says why that is exactly once). It keeps the
lag gauges, and rides out a broker that goes away (:mod:`pinpipe.lake.broker_loss`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from confluent_kafka import Message

from pinpipe.config import Settings
from pinpipe.events import all_topics
from pinpipe.lake.broker_loss import BrokerLossMixin
from pinpipe.lake.buffer import TopicPartitionKey
from pinpipe.lake.errors import SinkStopped
from pinpipe.lake.logs import LogLedger, LogTracker, sink_group
from pinpipe.lake.metrics import SinkMetrics
from pinpipe.lake.parquet import ParquetSink, SinkStats
from pinpipe.lake.storage import LakeStorage

log = logging.getLogger("pinpipe.lake")

# Commit errors meaning "this consumer no longer owns the partitions": drop, do not stop.
_LOST_OWNERSHIP = {"REBALANCE_IN_PROGRESS", "ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID",
                   "FENCED_INSTANCE_ID", "_STATE", "_ASSIGNMENT_LOST"}  # fmt: skip
# Errors meaning "the broker cannot be reached now": wait for it, do not stop.
_UNREACHABLE = {"_TRANSPORT", "_ALL_BROKERS_DOWN", "_TIMED_OUT", "_WAIT_COORD", "_MSG_TIMED_OUT",
                "COORDINATOR_NOT_AVAILABLE", "NOT_COORDINATOR", "COORDINATOR_LOAD_IN_PROGRESS",
                "REQUEST_TIMED_OUT", "_RESOLVE", "_NO_OFFSET"}  # fmt: skip
# How often the sink asks the broker's cluster id while all is well.
LOG_CHECK_EVERY_S = 5.0


class LakeSink(BrokerLossMixin):
    """Consume the pipeline's topics into the lake; see :mod:`pinpipe.lake.sink` for the method.

    ``run()`` blocks until ``stop_event`` is set (SIGTERM/SIGINT set it when ``run_sink`` runs
    in the main thread), then writes what is buffered, commits and leaves the group. ``buffer``
    is the :class:`~pinpipe.lake.parquet.ParquetSink` it feeds.
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
        self.buffer = ParquetSink(self.lake, self.storage, self.metrics, self.stats,
                                  checkpoint=self.flush_round)  # fmt: skip
        self._committed: dict[TopicPartitionKey, int] = {}
        self._failure: BaseException | None = None
        self._consumer = None
        self.logs = LogTracker(LogLedger(self.storage))
        self._uncommitted: dict[TopicPartitionKey, int] = {}  # written while the broker was away
        self._broker_lost_at: float | None = None
        self._retired: list = []  # consumers of earlier logs, closing in the background
        self._consumer_token: object = None

    def positions(self) -> dict[TopicPartitionKey, int]:
        """Next offset the sink will take, per assigned topic-partition (safe from any thread)."""
        return self.buffer.positions()

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
        buffer = self.buffer
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
                    self.add(messages)
                now = time.monotonic()
                if now >= next_housekeeping:
                    buffer.cut_aged(now)
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
                if buffer.has_cut:
                    self.flush_round()
                if self._broker_lost_at is not None:
                    self._ride_out_broker_loss()
            buffer.cut()
            self.flush_round()
        except BaseException:
            self._close_consumer(clean=False)
            raise
        self._close_consumer(clean=True)
        self._raise_failure()
        self.stats.elapsed_s = time.monotonic() - started
        return self.stats

    def add(self, messages: list[Message]) -> None:
        """Buffer a consumed batch; its errors are counted (a fatal one stops the sink)."""
        if any(map(Message.error, messages)):  # rare: report them, buffer the rest
            for message in messages:
                if message.error() is not None:
                    self._consumer_error(message.error())
            messages = [message for message in messages if message.error() is None]
        self.buffer.add(messages)
        self.metrics.consumed.inc(len(messages))

    def _close_consumer(self, clean: bool) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        if not clean:
            # Drop buffers first: the revoke during close must not write after a failure.
            self.buffer.clear()
        try:
            consumer.close()
        except Exception as exc:  # leaving the group is best effort; offsets are committed
            log.warning("lake sink: closing the consumer failed: %s", exc)

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
        positions = {}
        for tp in committed:
            key = (tp.topic, tp.partition)
            positions[key] = max(tp.offset, 0)
            if tp.offset >= 0:
                self._committed[key] = tp.offset
        self.buffer.assign(positions)
        log.info("lake sink: assigned %s", sorted(self.buffer.positions()))

    def _on_revoke(self, consumer, partitions) -> None:
        """Write what is buffered for the revoked partitions and commit, then let them go."""
        if self._ignored(consumer):
            return
        keys = {(tp.topic, tp.partition) for tp in partitions}
        try:
            if self._failure is None:
                self.buffer.cut(keys)
                self.flush_round()
        except BaseException as exc:  # raised inside librdkafka's callback: report in run()
            self._failure = exc
        finally:
            self._forget(keys)
        log.info("lake sink: revoked %s", sorted(keys))

    def _on_lost(self, consumer, partitions) -> None:
        """Another member may own these now: drop their buffers, write nothing. Unless the
        broker is gone (then no other member can read them): write them out, as a crash after
        writing and before committing would have (no commit follows: :mod:`pinpipe.lake.sink`)."""
        if self._ignored(consumer):
            return
        keys = {(tp.topic, tp.partition) for tp in partitions}
        if self._failure is None and not self._same_log(self._cluster_id(1.0, consumer)):
            if self._broker_lost_at is None:
                self._broker_lost_at = time.monotonic()
                self.metrics.broker_up.set(0)
            try:
                self.buffer.cut(keys)
                self._uncommitted.update(self.buffer.flush())
            except BaseException as exc:  # raised inside librdkafka's callback: report in run()
                self._failure = exc
        self._forget(keys)
        log.warning("lake sink: lost %s; their buffered records are left to the new owner",
                    sorted(keys))  # fmt: skip

    def _forget(self, keys: set[TopicPartitionKey]) -> None:
        self.buffer.forget(keys)
        for key in keys:
            self._committed.pop(key, None)
            for gauge in (self.metrics.lag, self.metrics.position):
                try:
                    gauge.remove(key[0], str(key[1]))
                except KeyError:
                    pass

    def _consumer_error(self, error) -> None:
        self.metrics.errors.labels("consumer").inc()
        if error.fatal():
            raise SinkStopped(f"fatal consumer error: {error}")
        log.warning("lake sink: consumer error: %s", error)

    # --- checkpoint: flush, then commit -----------------------------------------------------

    def flush_round(self) -> None:
        """Write every cut batch (in order), then commit the offsets after them (and any left
        uncommitted while the broker was away)."""
        if not self.buffer.has_cut and not self._uncommitted:
            return
        commits = {**self._uncommitted, **self.buffer.flush()}
        self._uncommitted = {}
        self.commit(commits)

    def commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
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
        for key, position in self.buffer.positions().items():
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

