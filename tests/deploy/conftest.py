"""Shared helpers of the deploy/ tests: paths, the Debian binaries they need, the metric
names pinpipe really defines (read from its metric registries) and the names referenced by
the Prometheus rules and the Grafana dashboard."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
GRAFANA_DIR = DEPLOY / "grafana"
INSTALL_SCRIPT = "scripts/install-system-packages.sh"


def require_binary(name: str) -> str:
    """The path of ``name``; fails (never skips) when missing, naming the install script."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"'{name}' is not on PATH. Install the Debian packages the tests need with "
            f"`sh {INSTALL_SCRIPT}` (as root; it prints the apt-get command otherwise).",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_binary("promtool")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    return require_binary("prometheus")
