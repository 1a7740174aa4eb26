"""deploy/ without running anything: the Grafana dashboard and provisioning files are well
formed (Grafana itself is not installable here), and every metric the dashboard and the alert
rules query is one that pinpipe defines."""

from __future__ import annotations

import json
import warnings

import pytest
import yaml

from tests.deploy.conftest import GRAFANA_DIR, PROMETHEUS_DIR
from tests.deploy.metric_names import (
    PENDING_PREFIXES,
    check_references,
    defined_series,
    referenced_names,
)

DASHBOARD = GRAFANA_DIR / "dashboards" / "pinpipe.json"
COMPONENT_JOBS = {"pinpipe-ingest", "pinpipe-lake-sink", "pinpipe-stream", "pinpipe-dashboard"}


@pytest.fixture(scope="module")
def defined() -> dict[str, str]:
    return defined_series()


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panel_exprs(dashboard: dict) -> dict[str, str]:
    return {
        f"panel {panel['id']} {panel['title']!r} target {target['refId']}": target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    }


def alert_rules() -> list[dict]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in rules["groups"] for rule in group["rules"]]


def report_pending(pending: set[str]) -> None:
    if pending:
        owners = "; ".join(f"{prefix}*: {owner}" for prefix, owner in PENDING_PREFIXES.items())
        warnings.warn(f"metrics not exported yet: {sorted(pending)} ({owners})", stacklevel=2)


def test_the_metric_registries_are_found(defined):
    # Sanity of the discovery itself: the ingest API's and the lake sink's families.
    assert "pinpipe_ingest_records_total" in defined
    assert "pinpipe_ingest_produce_latency_seconds_bucket" in defined
    assert "pinpipe_lake_consumer_lag" in defined
    assert "pinpipe_lake_records_written" not in defined  # a counter is scraped as ..._total


def test_dashboard_is_well_formed_grafana_json(dashboard):
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: dict[tuple[int, int], int] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in occupied, (
                    f"{panel['title']!r} overlaps panel {occupied[(x, y)]}"
                )
                occupied[(x, y)] = panel["id"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "gauge", "table", "bargauge"}
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], f"{panel['title']!r} has no query"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert referenced_names(target["expr"]) or 'job=~"pinpipe-' in target["expr"], (
                f"{panel['title']!r}: {target['expr']} queries no pinpipe metric"
            )


def test_every_dashboard_query_uses_metrics_pinpipe_defines(dashboard, defined):
    problems, pending = check_references(panel_exprs(dashboard), defined)
    assert not problems, "\n".join(problems)
    report_pending(pending)


def test_every_metric_pinpipe_defines_is_on_the_dashboard(dashboard, defined):
    shown = {defined[name] for e in panel_exprs(dashboard).values()
             for name in referenced_names(e) if name in defined}  # fmt: skip
    missing = sorted(set(defined.values()) - shown)
    assert not missing, (
        f"metrics without a panel in {DASHBOARD.relative_to(GRAFANA_DIR.parents[1])}: {missing}"
    )


def test_every_alert_uses_metrics_pinpipe_defines(defined):
    exprs = {f"alert {rule['alert']}": rule["expr"] for rule in alert_rules()}
    problems, pending = check_references(exprs, defined)
    assert not problems, "\n".join(problems)
    report_pending(pending)


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text(encoding="utf-8"))
    fires: set[str] = set()
    quiet: set[str] = set()
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fires == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown quiet"
    assert all("severity" in rule["labels"] and "summary" in rule["annotations"]
               for rule in alert_rules())  # fmt: skip


def test_prometheus_scrapes_every_component_on_loopback():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert COMPONENT_JOBS <= set(jobs)
    for name in COMPONENT_JOBS:
        targets = [t for static in jobs[name]["static_configs"] for t in static["targets"]]
        assert targets and all(t.startswith("127.0.0.1:") for t in targets), name
    assert config["rule_files"] == ["alerts.yml"]


def test_grafana_provisioning_points_at_the_dashboard_datasource(dashboard):
    provisioning = GRAFANA_DIR / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "pinpipe.yml").read_text())
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http")
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert variable["current"]["value"] == source["uid"]
    providers = yaml.safe_load((provisioning / "dashboards" / "pinpipe.yml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
