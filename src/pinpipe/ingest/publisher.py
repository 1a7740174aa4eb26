"""The producer behind the API: records in, broker acknowledgements out, awaited from asyncio.

One confluent-kafka ``Producer`` (acks=all, idempotent) per process. ``produce()`` only
enqueues; a dedicated poll thread serves librdkafka's delivery reports and wakes the awaiting
request once per batch with ``loop.call_soon_threadsafe``. A request is answered as a success
only when every one of its records was acknowledged.

Broker trouble is bounded in time: ``message.timeout.ms`` (``produce_timeout_s``) caps how long
a record waits, and after a transport failure a circuit breaker answers at once with
:class:`BrokerUnavailable` until a metadata probe (from the poll thread, every
``retry_after_s / 2`` s at most, or from ``/readyz``) reaches the broker again.

The producer is replaced by a fresh one when the breaker closes again and after a fatal or
fencing error: an idempotent producer whose in-flight requests timed out, or whose broker
restarted without its state (the embedded broker keeps everything in memory), can otherwise
stay wedged with every record timing out although the broker answers. Records still held by a
replaced producer are purged and their requests answered 503.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from pinpipe.ingest.delivery import (
    BrokerRefused,
    BrokerUnavailable,
    Delivery,
    Message,
    PendingBatch,
    QueueFull,
)

logger = logging.getLogger(__name__)

ACKED_EVERY_S = 5.0

# Delivery errors that say "the broker (or the way to it) is in trouble", not "this record".
_TRANSIENT = {
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._FATAL,
    KafkaError._PURGE_QUEUE,
    KafkaError._PURGE_INFLIGHT,
    KafkaError.UNKNOWN_PRODUCER_ID,
    KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError._FENCED,
}

# Errors after which the idempotent producer's state (producer id, epoch, sequence numbers) no
# longer matches the broker's, e.g. an in-memory broker restarted and forgot it: a new producer
# is the only way forward.
_RENEW = {
    KafkaError._FATAL,
    KafkaError._FENCED,
    KafkaError.PRODUCER_FENCED,
    KafkaError.UNKNOWN_PRODUCER_ID,
    KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.INVALID_PRODUCER_ID_MAPPING,
}


class Publisher:
    """Produces batches of records and awaits their acknowledgement.

    ``client_config`` is the broker's librdkafka configuration (bootstrap, security); the
    reliability settings are added here. ``on_broker_error`` (optional) is called with a short
    error kind for every broker-level failure, for metrics.

    ``on_acked`` (optional) is called from the poll thread with the broker's cluster id and the
    end of what it acknowledged per (topic, partition) (last offset + 1): every
    ``ACKED_EVERY_S`` when that changed, at once when the broker becomes unreachable (no more
    acknowledgements can come from that log then), and for the old log when the cluster id
    changes. It is how a log lost with its broker is accounted for (:mod:`pinpipe.lake.logs`).
    """

    def __init__(
        self,
        client_config: dict[str, Any],
        *,
        produce_timeout_s: float = 5.0,
        retry_after_s: int = 2,
        linger_ms: float = 20.0,
        queue_max_messages: int = 100_000,
        on_broker_error: Any = None,
        on_acked: Callable[[str, dict[tuple[str, int], int]], None] | None = None,
    ) -> None:
        self.produce_timeout_s = produce_timeout_s
        self.retry_after_s = retry_after_s
        self.queue_max_messages = queue_max_messages
        self._on_broker_error = on_broker_error or (lambda kind: None)
        self._config: dict[str, Any] = {
            **client_config,
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": int(produce_timeout_s * 1000),
            "linger.ms": linger_ms,
            "queue.buffering.max.messages": queue_max_messages,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
            "log.connection.close": False,
            "error_cb": self._on_error,
            "logger": logging.getLogger("pinpipe.ingest.kafka"),
        }
        self._lock = threading.Lock()  # guards swapping the producer against produce()
        self._producer: Producer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._renew = False  # replace the producer (poll thread)
        self._recovered = False  # a probe reached the broker while the breaker was open
        self._unavailable_since: float | None = None  # circuit breaker: open while set
        self._next_probe = 0.0
        self._on_acked = on_acked
        self.cluster_id: str | None = None  # of the log the acknowledgements below came from
        self.acked_ends: dict[tuple[str, int], int] = {}
        self._acked_reported: dict[tuple[str, int], int] = {}
        self._next_acked_report = 0.0

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Create the producer and start the poll thread (connects lazily, never blocks)."""
        if self._thread is not None:
            return
        self._producer = Producer(self._config)
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._poll_loop, name="ingest-producer-poll", daemon=True
        )
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Flush what is queued (up to ``timeout``), then stop the poll thread."""
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join()
        self._thread = None
        producer = self._producer
        if producer is not None:
            remaining = producer.flush(timeout)
            if remaining:
                logger.warning("%d records were not acknowledged before shutdown", remaining)

    # --- state -----------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False while the circuit breaker is open (the broker was unreachable)."""
        return self._unavailable_since is None

    def queue_depth(self) -> int:
        """Records waiting in the producer (queued or in flight)."""
        producer = self._producer
        return len(producer) if producer is not None else 0

    def queue_full(self) -> bool:
        return self.queue_depth() >= 0.9 * self.queue_max_messages

    def probe(self, timeout: float = 1.0) -> bool:
        """Ask the broker for metadata; closes the breaker on success, opens it on failure."""
        producer = self._producer
        if producer is None:
            return False
        try:
            metadata = producer.list_topics(timeout=timeout)
        except KafkaException:
            self._open_breaker("probe failed")
            return False
        self._note_cluster(metadata.cluster_id)
        if self._unavailable_since is not None:
            self._recovered = True  # the poll thread renews the producer, then closes the breaker
        return True

    def describe_topic(
        self, topic: str, timeout: float = 2.0
    ) -> list[tuple[int, int, list[int], list[int]]]:
        """``(partition, leader, replicas, in-sync replicas)`` of ``topic`` (blocking).

        An unknown topic has no partitions yet (it is created on first produce).
        """
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable("The producer is not running.", self.retry_after_s)
        try:
            metadata = producer.list_topics(topic, timeout=timeout)
        except KafkaException:
            raise BrokerUnavailable(
                "Kafka broker unavailable; retry later.", self.retry_after_s
            ) from None
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            return []
        return [
            (partition.id, partition.leader, list(partition.replicas), list(partition.isrs))
            for partition in sorted(described.partitions.values(), key=lambda item: item.id)
        ]

    # --- producing -------------------------------------------------------------------------

    async def publish(self, messages: Sequence[Message]) -> list[Delivery]:
        """Produce ``messages`` and wait until the broker acknowledged every one of them.

        Returns their deliveries in order. Raises a :class:`~pinpipe.ingest.delivery.PublishError`
        (transient :class:`BrokerUnavailable` or :class:`QueueFull`, terminal
        :class:`BrokerRefused`); then some records may have been written, none is reported as
        written.
        """
        if not messages:
            return []
        if not self.available:
            raise BrokerUnavailable("Kafka broker unavailable; retry later.", self.retry_after_s)
        batch = PendingBatch(asyncio.get_running_loop(), len(messages))
        deliver = batch.deliver
        with self._lock:
            producer = self._producer
            if producer is None:
                raise BrokerUnavailable("The producer is not running.", self.retry_after_s)
            try:
                for index, message in enumerate(messages):
                    producer.produce(
                        message.topic,
                        message.value,
                        message.key,
                        headers=message.headers,
                        on_delivery=partial(deliver, index),
                    )
            except BufferError:
                self._on_broker_error("queue_full")
                raise QueueFull(self.retry_after_s) from None
            except KafkaException as exc:
                self._on_broker_error("produce")
                if exc.args and isinstance(exc.args[0], KafkaError) and exc.args[0].fatal():
                    self._renew = True
                raise BrokerUnavailable(
                    "Kafka producer failed; retry later.", self.retry_after_s
                ) from None
        # Delivery reports are due within message.timeout.ms; the margin covers a producer
        # replaced under us, whose purged records may never be reported.
        try:
            reports = await asyncio.wait_for(batch.future, self.produce_timeout_s + 5.0)
        except TimeoutError:
            self._on_broker_error("lost_report")
            raise BrokerUnavailable(
                "No acknowledgement from Kafka in time; retry later.", self.retry_after_s
            ) from None
        deliveries = self._check(reports)
        if self._on_acked is not None:
            ends = self.acked_ends
            for message, delivery in zip(messages, deliveries):
                key = (message.topic, delivery.partition)
                if delivery.offset >= ends.get(key, 0):
                    ends[key] = delivery.offset + 1
        return deliveries

    def _check(self, reports: list[Any]) -> list[Delivery]:
        refused: KafkaError | None = None
        for report in reports:
            if isinstance(report, Delivery):
                continue
            if report.code() in _RENEW:
                self._renew = True
            if report.code() in _TRANSIENT or report.code() in _RENEW or report.retriable():
                self._on_broker_error("delivery")
                self._open_breaker(f"delivery failed: {report.name()}")
                raise BrokerUnavailable(
                    "Kafka did not acknowledge the records; retry later.", self.retry_after_s
                )
            refused = report
        if refused is not None:
            self._on_broker_error("refused")
            raise BrokerRefused(refused.name())
        self._close_breaker()
        return reports

    # --- the poll thread -------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            producer = self._producer
            try:
                producer.poll(0.05)
            except KafkaException as exc:  # raised out of a callback, e.g. a fatal error
                logger.warning("producer poll: %s", exc.args[0] if exc.args else exc)
            except Exception:  # never let the poll thread die
                logger.exception("producer poll failed")
            if self._unavailable_since is not None and time.monotonic() >= self._next_probe:
                self._next_probe = time.monotonic() + max(0.25, self.retry_after_s / 2)
                self.probe()
            if self._on_acked is not None:
                self._report_acked()
            if self._renew or self._recovered:
                recovered, self._recovered = self._recovered, False
                self._replace_producer()
                if recovered:
                    self._close_breaker()

    def _on_error(self, error: KafkaError) -> None:
        # librdkafka's error callback (poll thread). Codes only: no record content is logged.
        if error.fatal():
            logger.error("fatal producer error %s; the producer will be replaced", error.name())
            self._on_broker_error("fatal")
            self._renew = True
            self._open_breaker("fatal")
        elif error.code() == KafkaError._ALL_BROKERS_DOWN:
            logger.warning("all brokers are down")
            self._on_broker_error("all_brokers_down")
            self._open_breaker("all_brokers_down")
            if self._on_acked is not None:
                self._report_acked(now=True)

    # --- what was acknowledged, per log ----------------------------------------------------

    def _note_cluster(self, cluster_id: str | None) -> None:
        """A new cluster id is a new log: report the old log's ends, start counting again."""
        if cluster_id is None or cluster_id == self.cluster_id:
            return
        if self.cluster_id is not None and self._on_acked is not None:
            self._report_acked(now=True)
        self.cluster_id, self.acked_ends, self._acked_reported = cluster_id, {}, {}

    def _report_acked(self, now: bool = False) -> None:
        if self.cluster_id is None:
            if time.monotonic() >= self._next_acked_report:  # learn the log before its acks
                self._next_acked_report = time.monotonic() + 1.0
                try:
                    self._note_cluster(self._producer.list_topics(timeout=1.0).cluster_id)
                except KafkaException:
                    pass
            return
        if not now and time.monotonic() < self._next_acked_report:
            return
        self._next_acked_report = time.monotonic() + ACKED_EVERY_S
        ends = dict(self.acked_ends)
        if ends == self._acked_reported:
            return
        try:
            self._on_acked(self.cluster_id, ends)
            self._acked_reported = ends
        except Exception:  # bookkeeping: the next round tries again
            logger.exception("recording the acknowledged offsets failed")

    def _replace_producer(self) -> None:
        self._renew = False
        new = Producer(self._config)
        with self._lock:
            old, self._producer = self._producer, new
        if old is not None:
            # Fail what the old producer still holds, so its requests answer 503 now.
            try:
                old.purge(in_queue=True, in_flight=True, blocking=False)
                old.poll(0)
            except KafkaException:
                pass
        logger.info("producer replaced")

    def _open_breaker(self, reason: str) -> None:
        if self._unavailable_since is None:
            logger.warning("broker unavailable (%s); answering 503 until it is reachable", reason)
            self._unavailable_since = time.monotonic()
            self._next_probe = time.monotonic() + max(0.25, self.retry_after_s / 2)

    def _close_breaker(self) -> None:
        if self._unavailable_since is not None:
            logger.info("broker reachable again")
            self._unavailable_since = None
