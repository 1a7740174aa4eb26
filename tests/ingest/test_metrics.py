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


def test_several_workers_answer_metrics_for_the_whole_api(kafka_bootstrap, tmp_path):
    """`pinpipe api --workers 2`: whichever worker answers /metrics counts every worker's records."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from tests.ingest.conftest import free_port

    def value(text: str, name: str, **labels: str) -> float:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    return s.value
        raise AssertionError(f"{name}{labels} not in metrics")

    port, temp = free_port(), tmp_path / "tmp"
    temp.mkdir()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PINPIPE_")},
           "PINPIPE_DATA_DIR": str(tmp_path), "PINPIPE_BROKER__BOOTSTRAP_SERVERS": kafka_bootstrap,
           "PINPIPE_BROKER__TOPIC_PREFIX": f"workers{uuid.uuid4().hex[:8]}", "TMPDIR": str(temp)}
    server = subprocess.Popen([sys.executable, "-m", "pinpipe.cli", "api", "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "2"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "the API did not get ready"
            time.sleep(0.2)

        def post(_: int) -> int:  # a new connection each: the workers share the accepting
            return httpx.post(f"{url}/geo/", json=GEO, timeout=10).status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(post, range(40))) == [200] * 40
        for _ in range(10):  # a new connection each time, so the scrapes reach both workers
            text = httpx.get(f"{url}/metrics", timeout=10).text
            assert value(text, "pinpipe_ingest_records_total", table="geo", outcome="accepted") == 40
            assert value(text, "pinpipe_ingest_broker_available") == 1
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
    assert list(temp.iterdir()) == []  # the metrics files went with the server
