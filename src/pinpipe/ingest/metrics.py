"""Prometheus metrics of one ingest app, in a registry of its own (not the global one).

A registry per app keeps tests and several apps in one process independent. With several
uvicorn workers, :func:`pinpipe.ingest.server.serve` sets ``PROMETHEUS_MULTIPROC_DIR``: each
worker's values go to files there (prometheus-client's multiprocess mode) and every worker's
``/metrics`` answers for all of them, so a scrape sees the whole API whichever worker answers.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
GAUGE_REFRESH_S = 0.5  # how often each worker writes its producer gauges (several workers)


class IngestMetrics:
    """The ingest API's metrics; ``render()`` gives the exposition text."""

    def __init__(self) -> None:
        # Read when prometheus-client is imported, too: the variable must be set before that.
        self.multiprocess = MULTIPROCESS_DIR_ENV in os.environ
        self._stop_refresh = threading.Event()
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "pinpipe_ingest_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "pinpipe_ingest_request_duration_seconds",
            "HTTP request duration by route template.",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.records = Counter(
            "pinpipe_ingest_records_total",
            "Records by table and outcome: accepted (acknowledged), rejected (invalid, sent to "
            "the dead-letter topic), failed (not acknowledged: 429/503).",
            ["table", "outcome"],
            registry=self.registry,
        )
        self.produce_seconds = Histogram(
            "pinpipe_ingest_produce_latency_seconds",
            "Time from producing a request's records until the broker acknowledged all of them.",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.queue_depth = Gauge(
            "pinpipe_ingest_producer_queue_depth",
            "Records queued or in flight in the producer.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.broker_available = Gauge(
            "pinpipe_ingest_broker_available",
            "1 while the broker is considered reachable, 0 while requests get 503.",
            registry=self.registry,
            multiprocess_mode="livemin",  # 0 while any worker answers 503
        )
        self.broker_errors = Counter(
            "pinpipe_ingest_broker_errors_total",
            "Broker-level failures by kind (delivery, all_brokers_down, fatal, queue_full, ...).",
            ["kind"],
            registry=self.registry,
        )

    def broker_error(self, kind: str) -> None:
        self.broker_errors.labels(kind).inc()

    def bind_publisher(
        self, queue_depth: Callable[[], float], available: Callable[[], bool]
    ) -> None:
        """Read the producer's state at scrape time; with several workers, every
        ``GAUGE_REFRESH_S`` (a scrape reaches one worker, the others' values are in files)."""
        if not self.multiprocess:
            self.queue_depth.set_function(queue_depth)
            self.broker_available.set_function(lambda: 1.0 if available() else 0.0)
            return

        def refresh() -> None:
            while True:
                self.queue_depth.set(queue_depth())
                self.broker_available.set(1.0 if available() else 0.0)
                if self._stop_refresh.wait(GAUGE_REFRESH_S):
                    return

        threading.Thread(target=refresh, name="ingest-metrics-gauges", daemon=True).start()

    def close(self) -> None:
        """Stop refreshing; a stopped worker's live gauges leave the sums."""
        self._stop_refresh.set()
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)


class RequestMetricsMiddleware:
    """Pure ASGI middleware counting requests by route template (bounded label values)."""

    def __init__(self, app: ASGIApp, metrics: IngestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.request_seconds.labels(template).observe(time.perf_counter() - started)
