"""A real Prometheus server scrapes a real ingest API and a real lake sink.

The server runs the shipped deploy/prometheus/prometheus.yml with two changes: the targets of
the running components (on free loopback ports) and a 1 s scrape interval. The stream job and
the dashboard are left out until they export metrics. It also loads the shipped alert rules,
and every dashboard query is run against it, so a query Prometheus cannot parse fails here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from pinpipe.config import Settings
from tests.deploy.conftest import GRAFANA_DIR, PROMETHEUS_DIR, ROOT
from tests.ingest.conftest import running_api
from tests.ingest.rows import GEO

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 30.0
SCRAPED_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def poll(check: Callable[[], object], timeout: float, what: Callable[[], str]) -> object:
    """Call ``check`` until it returns something truthy; fail with ``what()`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"after {timeout:.0f} s: {what()}")
        time.sleep(0.2)


def get_json(url: str, **params: str) -> dict | None:
    try:
        response = httpx.get(url, params=params, timeout=5)
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def log_tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prometheus")


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, workdir: Path) -> Settings:
    prefix = f"prom{uuid.uuid4().hex[:8]}"
    return Settings(
        data_dir=workdir / "data",
        broker={"bootstrap_servers": kafka_bootstrap, "topic_prefix": prefix, "partitions": 1},
        ingest={"port": 0},
    )


@pytest.fixture(scope="module")
def api_url(settings: Settings) -> Iterator[str]:
    with running_api(settings) as api:
        yield api.url


@pytest.fixture(scope="module")
def sink_metrics_address(settings: Settings, kafka_bootstrap: str, workdir: Path) -> Iterator[str]:
    """``python -m pinpipe.lake --metrics-port``, as the component runs in production."""
    port = free_port()
    log = workdir / "sink.log"
    command = [
        sys.executable, "-m", "pinpipe.lake", "--bootstrap", kafka_bootstrap,
        "--data-dir", str(settings.data_dir), "--topic-prefix", settings.broker.topic_prefix,
        "--group", f"{settings.broker.topic_prefix}-sink", "--session-timeout-ms", "2000",
        "--metrics-port", str(port),
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        address = f"127.0.0.1:{port}"

        def serving() -> bool:
            if process.poll() is not None:
                pytest.fail(f"the lake sink exited ({process.returncode}):\n{log_tail(log)}")
            try:
                return httpx.get(f"http://{address}/metrics", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        poll(serving, START_TIMEOUT_S, lambda: f"lake sink metrics not served:\n{log_tail(log)}")
        yield address
    finally:
        stop(process)


def scrape_config(api_address: str, sink_address: str) -> dict:
    """The shipped config, scraping the running components every second."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    running = {"pinpipe-ingest": api_address, "pinpipe-lake-sink": sink_address}
    jobs = [job for job in config["scrape_configs"] if job["job_name"] in running]
    for job in jobs:
        for static in job["static_configs"]:
            static["targets"] = [running[job["job_name"]]]
    config["scrape_configs"] = jobs
    return config


@pytest.fixture(scope="module")
def prometheus(prometheus_binary: str, workdir: Path, api_url: str,
               sink_metrics_address: str) -> Iterator[str]:  # fmt: skip
    """A Prometheus server on a free loopback port; yields its base URL."""
    config_path = workdir / "prometheus.yml"
    api_address = api_url.removeprefix("http://")
    config_path.write_text(yaml.safe_dump(scrape_config(api_address, sink_metrics_address)))
    port = free_port()
    log = workdir / "prometheus.log"
    command = [
        prometheus_binary, f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
                                   env={**os.environ, "GOMAXPROCS": "1"})  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"prometheus exited ({process.returncode}):\n{log_tail(log)}")
            try:
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        poll(ready, START_TIMEOUT_S, lambda: f"prometheus not ready:\n{log_tail(log)}")
        yield url
    finally:
        stop(process)


def query(url: str, expr: str) -> dict:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert answer["status"] == "success", f"{expr}: {answer}"
    return answer["data"]


def test_prometheus_scrapes_the_components(prometheus, api_url):
    # Some traffic: one accepted and one rejected record.
    assert httpx.post(f"{api_url}/geo/", json=GEO, timeout=30).status_code == 200
    assert httpx.post(f"{api_url}/geo/", json={"ind": "bad"}, timeout=30).status_code == 422

    targets: dict = {}

    def all_up() -> bool:
        answer = get_json(f"{prometheus}/api/v1/targets", state="active")
        if answer is None:
            return False
        targets.clear()
        targets.update({t["labels"]["job"]: t for t in answer["data"]["activeTargets"]})
        return set(targets) == {"pinpipe-ingest", "pinpipe-lake-sink"} and all(
            t["health"] == "up" for t in targets.values()
        )

    poll(
        all_up,
        SCRAPED_TIMEOUT_S,
        lambda: (
            "targets not up: "
            + json.dumps(
                {job: (t["health"], t["lastError"], t["scrapeUrl"]) for job, t in targets.items()}
            )
        ),
    )

    # The records counted by the API reach Prometheus under the shipped job name.
    def counted() -> dict:
        data = query(
            prometheus, 'sum by (outcome) (pinpipe_ingest_records_total{job="pinpipe-ingest"})'
        )
        return {r["metric"]["outcome"]: float(r["value"][1]) for r in data["result"]}

    poll(lambda: counted() == {"accepted": 1.0, "rejected": 1.0}, SCRAPED_TIMEOUT_S,
         lambda: f"ingest records in Prometheus: {counted()}")  # fmt: skip
    sink = query(prometheus, 'pinpipe_lake_buffered_bytes{job="pinpipe-lake-sink"}')
    assert len(sink["result"]) == 1


def test_prometheus_loads_the_alert_rules(prometheus):
    shipped = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text(encoding="utf-8"))
    expected = {rule["alert"] for group in shipped["groups"] for rule in group["rules"]}

    def evaluated() -> dict | None:
        answer = get_json(f"{prometheus}/api/v1/rules")
        if answer is None:
            return None
        rules = {r["name"]: r for g in answer["data"]["groups"] for r in g["rules"]}
        done = set(rules) == expected and all(r["health"] != "unknown" for r in rules.values())
        return rules if done else None

    rules = poll(evaluated, SCRAPED_TIMEOUT_S, lambda: "alert rules not loaded and evaluated")
    errors = {name: rule.get("lastError") for name, rule in rules.items() if rule["health"] != "ok"}
    assert not errors


def test_prometheus_parses_every_dashboard_query(prometheus):
    dashboard = json.loads((GRAFANA_DIR / "dashboards" / "pinpipe.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            # Grafana replaces $__rate_interval with at least four scrape intervals.
            query(prometheus, target["expr"].replace("$__rate_interval", "1m"))
