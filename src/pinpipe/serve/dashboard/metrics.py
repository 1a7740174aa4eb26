"""The dashboard's own ``/metrics``: the batch job's runs, read from PostgreSQL at scrape time.

The batch job runs and exits, so it records each run in ``pinpipe.batch_run``
(:mod:`pinpipe.store.runs`) and this collector exports the table: runs from ``pinpipe batch``,
``pinpipe up --batch-every`` and Airflow all count. Both ``status`` values are exported from
the start (0 included), so ``increase()`` sees the first failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pinpipe.store.runs import STATUSES

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

RunSummary = tuple[dict[str, int], float]
"""Runs by status and the Unix time of the last successful run's end (0 if none)."""


class _BatchRunCollector(Collector):
    def __init__(self, read: Callable[[], RunSummary] | None) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        counts, last_success = dict.fromkeys(STATUSES, 0), 0.0
        if self.read is not None:
            try:
                counts, last_success = self.read()
            except Exception as exc:  # PostgreSQL down: the series stay, at their zero values
                log.warning("batch runs not readable for /metrics: %s", exc)
        runs = CounterMetricFamily(
            "pinpipe_batch_runs", "Finished batch runs by outcome (success, failed).", labels=["status"]
        )
        for status in STATUSES:
            runs.add_metric([status], counts.get(status, 0))
        yield runs
        yield GaugeMetricFamily(
            "pinpipe_batch_last_success_timestamp_seconds",
            "Unix time of the end of the last successful batch run (0 if none).",
            value=last_success,
        )


class BatchRunMetrics:
    """A registry of its own holding the batch-run collector; ``render()`` gives the text."""

    def __init__(self, read: Callable[[], RunSummary] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_BatchRunCollector(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)
