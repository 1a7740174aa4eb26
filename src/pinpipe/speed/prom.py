"""Prometheus metrics of the stream job, on a registry of their own (one per job).

- ``pinpipe_stream_latency_seconds``: per record, its broker timestamp to the PostgreSQL
  commit of its micro-batch (observed right after the commit; replayed batches are not
  observed again);
- ``pinpipe_stream_records_total{table}``: records of committed micro-batches per output
  table (``pin``, ``geo``, ``user``, ``dead_letter``; every Kafka record lands in exactly one);
- ``pinpipe_stream_consumer_lag{topic,partition}``: the latest end offset the source's probe
  reported minus the end offset of the last committed micro-batch, both read from the
  query's last progress (``latestOffset`` and ``endOffset`` of its source);
- ``pinpipe_stream_query_active``: 1 while the query runs, 0 while the process has none
  (Spark starting, the warm-up, after the query failed);
- ``pinpipe_stream_last_progress_timestamp_seconds``: Unix time the query last committed a
  micro-batch or ran a trigger that found nothing new to read (0: neither yet). With the gauge
  above this tells "does its job" from "is alive" (:func:`pinpipe.speed.health.stream_health`);
- ``pinpipe_stream_broker_unreachable_since_timestamp_seconds``: since when the source's broker
  does not answer (0: it answers);
- ``pinpipe_stream_log_restarts_total``: broker logs the source found restarted under its
  checkpointed offsets, and ``pinpipe_stream_records_lost_total{topic}``: acknowledged records of
  those old logs the stream had not processed (as far as their end was seen;
  ``pinpipe_stream_lost_ranges_end_unknown_total{topic}`` counts partitions whose old end was
  never seen). Both come from the source's journal in the checkpoint
  (:mod:`pinpipe.speed.journal`), so they are totals over the checkpoint's life.
"""

from __future__ import annotations

import json
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from pinpipe.speed.journal import SourceJournal
from pinpipe.speed.offsets import LOG_KEY

LATENCY_BUCKETS = (0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 10, 20, 60)


def _offsets(value: Any) -> dict[str, dict[str, int]]:
    """A source offset of a progress report (JSON text or already parsed) -> topic -> partition -> offset."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {}
    if not isinstance(value, dict):
        return {}
    out: dict[str, dict[str, int]] = {}
    for topic, parts in value.items():
        if isinstance(parts, dict) and topic != LOG_KEY:  # the log mark is no partition
            out[str(topic)] = {
                str(p): int(o) for p, o in parts.items() if isinstance(o, (int, float))
            }
    return out


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "pinpipe_stream_latency_seconds",
            "Broker timestamp of a record to the PostgreSQL commit of its micro-batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.records = Counter(
            "pinpipe_stream_records", "Records committed to PostgreSQL, by output table.", ["table"],
            registry=r,
        )  # fmt: skip
        self.lag = Gauge(
            "pinpipe_stream_consumer_lag",
            "Latest end offset known to the source minus the committed end offset.",
            ["topic", "partition"],
            registry=r,
        )
        self.query_active = Gauge(
            "pinpipe_stream_query_active", "1 while the stream's query runs, 0 while the process has none.",
            registry=r,
        )  # fmt: skip
        self.last_progress = Gauge(
            "pinpipe_stream_last_progress_timestamp_seconds",
            "Unix time of the last committed micro-batch or trigger that found nothing new (0: none yet).",
            registry=r,
        )
        self.unreachable_since = Gauge(
            "pinpipe_stream_broker_unreachable_since_timestamp_seconds",
            "Unix time since which the broker does not answer the source (0: it answers).",
            registry=r,
        )
        self.log_restarts = Counter(
            "pinpipe_stream_log_restarts", "Broker logs found restarted under the checkpointed offsets.",
            registry=r,
        )  # fmt: skip
        self.records_lost = Counter(
            "pinpipe_stream_records_lost",
            "Acknowledged records of a restarted log the stream had not processed, by topic.",
            ["topic"],
            registry=r,
        )
        self.lost_end_unknown = Counter(
            "pinpipe_stream_lost_ranges_end_unknown",
            "Partitions of a restarted log whose records past the last processed offset were never counted.",
            ["topic"],
            registry=r,
        )
        self._journal_position = 0
        self._last_progress = 0.0

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Expose ``/metrics`` on ``addr:port`` (a daemon thread)."""
        start_http_server(port, addr=addr, registry=self.registry)

    def committed(
        self, outputs: dict[str, Any], broker_timestamps: Any, commit_time: float | None = None
    ) -> None:
        """A micro-batch committed: ``outputs`` tag -> Arrow table; per-record broker timestamps."""
        import pyarrow as pa
        import pyarrow.compute as pc

        now_us = int((time.time() if commit_time is None else commit_time) * 1_000_000)
        for table, arrow in outputs.items():
            if arrow is not None and arrow.num_rows:
                self.records.labels(table=table).inc(arrow.num_rows)
        stamps = pc.drop_null(broker_timestamps)
        if not len(stamps):
            return
        micros = stamps.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        observe = self.latency.observe
        for latency_us in pc.subtract(pa.scalar(now_us, pa.int64()), micros).to_numpy(
            zero_copy_only=False
        ):
            observe(max(float(latency_us), 0.0) / 1_000_000)

    def progress(self, progress: Any) -> None:
        """Set the consumer lag from a query progress (``query.lastProgress``)."""
        if not progress:
            return
        sources = (
            progress.get("sources")
            if isinstance(progress, dict)
            else getattr(progress, "sources", None)
        )
        for source in sources or ():
            get = (
                source.get
                if isinstance(source, dict)
                else (lambda k, s=source: getattr(s, k, None))
            )
            end = _offsets(get("endOffset"))
            latest = _offsets(get("latestOffset")) or end
            for topic, parts in end.items():
                for part, committed in parts.items():
                    head = latest.get(topic, {}).get(part, committed)
                    self.lag.labels(topic=topic, partition=part).set(max(head - committed, 0))

    def progressed(self, at: float | None = None) -> None:
        """The query committed a micro-batch, or a trigger found nothing new, at ``at``."""
        at = time.time() if at is None else at
        if at > self._last_progress:
            self._last_progress = at
            self.last_progress.set(at)

    def follow(self, journal: SourceJournal) -> None:
        """Take the source's new journal events and its state (call it often; it is cheap)."""
        events, self._journal_position = journal.events(self._journal_position)
        for event in events:
            if event.get("kind") == "log_restart":
                self.log_restarts.inc()
            for lost in event.get("lost", ()):
                topic = str(lost.get("topic"))
                if lost.get("end") is None:
                    self.lost_end_unknown.labels(topic=topic).inc()
                else:
                    self.records_lost.labels(topic=topic).inc(max(int(lost["end"]) - int(lost["first"]), 0))
        state = journal.state()
        self.unreachable_since.set(float(state.get("unreachable_since") or 0))
        if state.get("idle") and not state.get("unreachable_since"):
            self.progressed(float(state.get("at") or 0))
