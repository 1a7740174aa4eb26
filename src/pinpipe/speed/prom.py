"""Prometheus metrics of the stream job, on a registry of their own (one per job).

- ``pinpipe_stream_latency_seconds``: per record, its broker timestamp to the PostgreSQL
  commit of its micro-batch (observed right after the commit; replayed batches are not
  observed again);
- ``pinpipe_stream_records_total{table}``: records of committed micro-batches per output
  table (``pin``, ``geo``, ``user``, ``dead_letter``; every Kafka record lands in exactly one);
- ``pinpipe_stream_consumer_lag{topic,partition}``: the latest end offset the source's probe
  reported minus the end offset of the last committed micro-batch, both read from the
  query's last progress (``latestOffset`` and ``endOffset`` of its source).
"""

from __future__ import annotations

import json
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

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
        if isinstance(parts, dict):
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
