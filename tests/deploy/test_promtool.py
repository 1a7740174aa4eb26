"""promtool accepts the shipped configuration and rules, and the rules' unit tests pass."""

from __future__ import annotations

import subprocess

import pytest

from tests.deploy.conftest import PROMETHEUS_DIR, ROOT

pytestmark = pytest.mark.integration


def run_promtool(promtool: str, *args: str) -> str:
    result = subprocess.run(
        [promtool, *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_check_config(promtool):
    output = run_promtool(promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert "SUCCESS" in output


def test_check_rules(promtool):
    output = run_promtool(promtool, "check", "rules", str(PROMETHEUS_DIR / "alerts.yml"))
    assert "SUCCESS" in output


def test_alert_unit_tests(promtool):
    output = run_promtool(promtool, "test", "rules", str(PROMETHEUS_DIR / "alerts_test.yml"))
    assert "SUCCESS" in output
