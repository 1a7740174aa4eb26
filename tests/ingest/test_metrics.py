"""/healthz, /readyz and /metrics."""

from __future__ import annotations

import pytest

from tests.ingest.rows import GEO

pytestmark = pytest.mark.integration


def sample(text: str, name: str) -> float:
    """The value of the metric line that starts with ``name`` (labels included)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_health_and_readiness(api):
    assert api.client.get("/healthz").content == b'{"status":"ok"}'
    response = api.client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "broker": "reachable",
        "queue_depth": 0,
        "queue_full": False,
    }


def test_metrics_count_requests_records_and_latency(api_factory):
    api = api_factory()
    assert api.client.post("/geo/", json=GEO).status_code == 200
    assert api.client.post("/geo/", json={"ind": "bad"}).status_code == 422
    assert api.client.post("/v1/events", json=[{"table": "geo", "value": GEO}]).status_code == 200
    response = api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        sample(text, 'pinpipe_ingest_requests_total{method="POST",route="/geo/",status="200"}') == 1
    )
    assert (
        sample(text, 'pinpipe_ingest_requests_total{method="POST",route="/geo/",status="422"}') == 1
    )
    assert (
        sample(text, 'pinpipe_ingest_requests_total{method="POST",route="/v1/events",status="200"}')
        == 1
    )
    assert sample(text, 'pinpipe_ingest_records_total{outcome="accepted",table="geo"}') == 2
    assert sample(text, 'pinpipe_ingest_records_total{outcome="rejected",table="geo"}') == 1
    assert sample(text, "pinpipe_ingest_produce_latency_seconds_count") == 3
    assert sample(text, "pinpipe_ingest_producer_queue_depth") == 0
    assert sample(text, "pinpipe_ingest_broker_available") == 1
