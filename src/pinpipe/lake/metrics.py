"""Prometheus metrics of the lake sink, on a registry of their own (one per sink).

Consumer lag is the broker's high watermark minus the sink's committed offset: records in
Kafka that are not yet durable in the lake. The high watermark is the one carried in fetch
responses (``get_watermark_offsets(tp, cached=True)``): on the embedded Tansu broker a
ListOffsets(LATEST) request answers a stale offset (ARCHITECTURE.md), measured to trail the
fetch-response value by up to one record batch.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "pinpipe_lake_records_consumed", "Records taken from Kafka (buffered or written).",
            registry=r,
        )
        self.records = Counter(
            "pinpipe_lake_records_written", "Records written to the lake.", ["table"], registry=r
        )
        self.bytes = Counter(
            "pinpipe_lake_bytes_written", "Parquet bytes written to the lake.", ["table"], registry=r
        )
        self.files = Counter(
            "pinpipe_lake_files_written", "Parquet files written to the lake.", ["table"], registry=r
        )
        self.flush_seconds = Histogram(
            "pinpipe_lake_flush_seconds",
            "Time to encode and durably write one file.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.lag = Gauge(
            "pinpipe_lake_consumer_lag",
            "High watermark minus committed offset (records not yet durable in the lake).",
            ["topic", "partition"],
            registry=r,
        )
        self.position = Gauge(
            "pinpipe_lake_position",
            "Next offset the sink takes from each partition (what it has consumed, written or not).",
            ["topic", "partition"],
            registry=r,
        )
        self.buffered_bytes = Gauge(
            "pinpipe_lake_buffered_bytes", "Value bytes held in memory, not yet written.", registry=r
        )
        self.broker_up = Gauge(
            "pinpipe_lake_broker_up",
            "1 while the sink can reach the broker (fetch and commit), 0 while it cannot.",
            registry=r,
        )
        self.log_generation = Gauge(
            "pinpipe_lake_log_generation",
            "Which log of the broker the sink reads: 0 the first, n after n restarts that emptied it.",
            registry=r,
        )
        self.records_lost = Counter(
            "pinpipe_lake_records_lost",
            "Acknowledged records of an ended broker log that never reached the lake (at least).",
            ["topic"], registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "pinpipe_lake_errors", "Errors by kind (storage_retry, storage, commit, consumer).",
            ["kind"], registry=r,
        )  # fmt: skip

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Expose ``/metrics`` on ``addr:port`` (a daemon thread)."""
        start_http_server(port, addr=addr, registry=self.registry)
