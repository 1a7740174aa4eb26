"""What the dashboard and `pinpipe status` read from the lake sink's /metrics about the broker:
reachable or not, and how many acknowledged records a broker that came back empty lost."""

from __future__ import annotations

from pinpipe.lake.metrics import SinkMetrics
from pinpipe.serve.dashboard.scrape import scrape, summarize
from pinpipe.services.broker import free_port


def test_a_sink_without_broker_and_its_losses_are_read_from_its_metrics() -> None:
    metrics = SinkMetrics()
    port = free_port()
    metrics.serve(port)
    url = f"http://127.0.0.1:{port}/metrics"
    metrics.broker_up.set(1)
    healthy = summarize("lake-sink", scrape(url))
    assert healthy["broker_up"] is True and healthy["records_lost_total"] == 0

    metrics.broker_up.set(0)
    metrics.records_lost.labels("p.pin").inc(12)
    metrics.records_lost.labels("p.geo").inc(3)
    summary = summarize("lake-sink", scrape(url))
    assert summary["broker_up"] is False
    assert summary["records_lost_total"] == 15
