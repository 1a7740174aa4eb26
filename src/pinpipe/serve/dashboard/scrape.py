"""Reading the components' Prometheus ``/metrics``: what the dashboard and ``pinpipe status`` show.

Each long-running component (ingest API, lake sink, stream job) serves the Prometheus text
format; :func:`scrape` fetches one and :func:`summarize` reduces it to the few figures a person
looks at: records accepted/rejected, consumer lag, stream latency. Rates need two scrapes:
:class:`RateTracker` keeps recent totals and answers per-second rates over a short span.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Scrape:
    """One scrape of one component: samples by (name, labels) or the error that prevented it."""

    url: str
    ok: bool
    error: str = ""
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def total(self, name: str, **labels: str) -> float | None:
        """Sum of the samples named ``name`` whose labels include ``labels`` (None if none)."""
        values = [
            value for sample, sample_labels, value in self.samples
            if sample == name and all(sample_labels.get(k) == v for k, v in labels.items())
        ]  # fmt: skip
        return sum(values) if values else None

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """Samples named ``name`` summed per value of ``label``."""
        out: dict[str, float] = {}
        for sample, labels, value in self.samples:
            if sample == name and label in labels:
                out[labels[label]] = out.get(labels[label], 0.0) + value
        return out


def scrape(url: str, timeout_s: float = 1.5) -> Scrape:
    """Fetch and parse ``url`` (a ``/metrics`` address); never raises."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (our URLs)
            text = response.read().decode("utf-8", errors="replace")
        samples = [
            (sample.name, dict(sample.labels), float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
    except Exception as exc:  # down, refused, timeout, garbage: all mean "not healthy"
        return Scrape(url, False, f"{type(exc).__name__}: {exc}")
    return Scrape(url, True, samples=samples)


def http_ok(url: str, timeout_s: float = 1.5) -> bool:
    """True when ``url`` answers 2xx (a ``/healthz``)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            return 200 <= response.status < 300
    except Exception:
        return False


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative bucket counts (upper bound -> count)."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (count - previous_count)
        previous_bound, previous_count = bound, count
    return bounds[-1]


def buckets_of(result: Scrape, name: str) -> dict[float, float]:
    """Cumulative buckets of histogram ``name`` (summed over its other labels)."""
    buckets: dict[float, float] = {}
    for sample, labels, value in result.samples:
        if sample == f"{name}_bucket" and "le" in labels:
            bound = float(labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
    return buckets


# Series names each component exports (src/pinpipe/*/metrics.py).
INGEST_RECORDS = "pinpipe_ingest_records_total"
LAG_SERIES = {"lake-sink": "pinpipe_lake_consumer_lag", "stream": "pinpipe_stream_consumer_lag"}
THROUGHPUT_SERIES = {
    "ingest": ("pinpipe_ingest_records_total", {"outcome": "accepted"}),
    "lake-sink": ("pinpipe_lake_records_written_total", {}),
    "stream": ("pinpipe_stream_records_total", {}),
}
STREAM_LATENCY = "pinpipe_stream_latency_seconds"


def summarize(component: str, result: Scrape) -> dict:
    """The figures of one component's scrape: up, processed records, lag, latency."""
    summary: dict = {"component": component, "up": result.ok, "error": result.error}
    if not result.ok:
        return summary
    series, labels = THROUGHPUT_SERIES.get(component, ("", {}))
    summary["records_total"] = result.total(series, **labels) if series else None
    if component == "ingest":
        summary["accepted_total"] = result.total(INGEST_RECORDS, outcome="accepted") or 0.0
        summary["rejected_total"] = result.total(INGEST_RECORDS, outcome="rejected") or 0.0
        summary["failed_total"] = result.total(INGEST_RECORDS, outcome="failed") or 0.0
        available = result.total("pinpipe_ingest_broker_available")
        summary["broker_available"] = None if available is None else available >= 1
    if component == "lake-sink":
        broker_up = result.total("pinpipe_lake_broker_up")
        summary["broker_up"] = None if broker_up is None else broker_up >= 1
        summary["records_lost_total"] = result.total("pinpipe_lake_records_lost_total") or 0.0
    if component in LAG_SERIES:
        lags = result.by_label(LAG_SERIES[component], "topic")
        summary["lag"] = sum(lags.values()) if lags else None
        summary["lag_by_topic"] = lags
    if component == "stream":
        buckets = buckets_of(result, STREAM_LATENCY)
        summary["latency_p50_s"] = histogram_quantile(0.5, buckets)
        summary["latency_p99_s"] = histogram_quantile(0.99, buckets)
    return summary


class RateTracker:
    """Per-second rates of growing totals, over the last ``span_s`` seconds of observations."""

    def __init__(self, span_s: float = 10.0, keep: int = 90) -> None:
        self.span_s = span_s
        self._points: deque[tuple[float, dict[str, float]]] = deque(maxlen=keep)
        self.history: deque[tuple[float, dict[str, float]]] = deque(maxlen=keep)

    def observe(self, totals: dict[str, float], now: float | None = None) -> dict[str, float]:
        """Record ``totals`` and return the rate of each since the oldest point within the span."""
        now = time.time() if now is None else now
        base = None
        for when, values in self._points:
            if now - when <= self.span_s:
                base = (when, values)
                break
        if base is None and self._points:
            base = self._points[-1]
        self._points.append((now, totals))
        rates: dict[str, float] = {}
        for name, value in totals.items():
            if base is None or now - base[0] <= 0 or name not in base[1]:
                rates[name] = 0.0
                continue
            # A restarted component starts its counters again at 0: no negative rate.
            rates[name] = max(0.0, (value - base[1][name]) / (now - base[0]))
        self.history.append((now, rates))
        return rates
