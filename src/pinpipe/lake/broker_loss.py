"""How the lake sink rides out a broker that goes away: a part of :class:`LakeSink`.

When the broker becomes unreachable, the sink writes out every record it had fetched (so only
records it never fetched can be lost with a broker that keeps its log in memory), writes nothing
more, and waits for the broker: if the same log comes back (same cluster id) it commits and goes
on; if an empty new log comes back, it reports what the old log held beyond the lake
(:mod:`pinpipe.lake.logs`), and reads the new log from its start into files of the next
generation, which never replace the old log's.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from pinpipe.config import Settings
from pinpipe.lake.parquet import with_retries

log = logging.getLogger("pinpipe.lake")

# How often the sink says it is still waiting for an unreachable broker.
_WAITING_LOG_EVERY_S = 15.0


class BrokerLossMixin:
    """The broker-loss half of :class:`~pinpipe.lake.consumer.LakeSink`: it works on the sink's
    consumer, ``buffer``, ``logs``, ``metrics``, ``stats`` and ``_uncommitted`` /
    ``_broker_lost_at`` (the offsets written while the broker was away, and since when)."""

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
        positions = self.buffer.positions()
        lost = with_retries(lambda: self.logs.enter(cluster, positions), self.lake, self.metrics)
        self.buffer.generation = self.logs.generation
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
            self.add(messages)
        fetched = self.buffer.buffered_records()
        log.warning("lake sink: the broker is unreachable; writing out the %d records fetched", fetched)
        self.buffer.cut()
        self._uncommitted.update(self.buffer.flush())
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
            self.commit(pending)
            return
        self._enter_log(cluster)
        self._uncommitted.clear()  # offsets of the old log mean nothing in the new one
        self._forget(set(self.buffer.positions()))
        self._retire_consumer()
        ensure_pipeline_topics(self.settings, self.bootstrap)  # the new log has none yet
        self._subscribe()


def ensure_pipeline_topics(settings: Settings, bootstrap: str) -> None:
    """Create the pipeline's topics if missing (best effort: subscribing works without); at
    start and when the broker came back with an empty log."""
    from pinpipe.services.topics import TopicError, ensure_pipeline_topics

    try:
        ensure_pipeline_topics(settings, bootstrap)
    except TopicError as exc:
        log.warning("lake sink: could not ensure topics (%s); subscribing anyway", exc)
