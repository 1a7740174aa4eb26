"""The Prometheus series names pinpipe defines, found by importing its metric modules.

No second list: every module under ``src/pinpipe`` that imports ``prometheus_client`` is
imported, and the metric families of its registries are collected (module-level registries,
the global registry, and the registry of every class of the module that can be built without
arguments, such as ``IngestMetrics`` and ``SinkMetrics``). A family gives the series names
Prometheus stores: a counter ``x`` is scraped as ``x_total`` (and ``x_created``), a histogram
as ``x_bucket``, ``x_sum``, ``x_count``.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import prometheus_client
from prometheus_client import CollectorRegistry

import pinpipe

SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}

# Metrics the deploy/ files rely on whose component does not export any metric yet. A name
# with one of these prefixes may be missing only while *no* metric with that prefix exists;
# once the component exports its first one, every referenced name must exist. Remove an entry
# when its component has shipped its metrics.
PENDING_PREFIXES = {
    "pinpipe_batch_": "the batch job's runs, exported by the dashboard's /metrics: "
    "pinpipe_batch_last_success_timestamp_seconds (gauge), pinpipe_batch_runs_total{status}",
}

METRIC_NAME = re.compile(r"\bpinpipe_[A-Za-z0-9_]+")


def metric_modules() -> list[str]:
    """Dotted names of pinpipe's modules that use prometheus_client."""
    package_dir = Path(pinpipe.__file__).parent
    modules = []
    for path in sorted(package_dir.rglob("*.py")):
        if "prometheus_client" not in path.read_text(encoding="utf-8"):
            continue
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules.append(".".join(parts))
    return modules


def _registries(module) -> list[CollectorRegistry]:
    found = [value for value in vars(module).values() if isinstance(value, CollectorRegistry)]
    for cls in vars(module).values():
        if not inspect.isclass(cls) or cls.__module__ != module.__name__:
            continue
        try:
            required = [
                p for p in inspect.signature(cls).parameters.values()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            ]  # fmt: skip
        except (TypeError, ValueError):
            continue
        if required:
            continue
        registry = getattr(cls(), "registry", None)
        if isinstance(registry, CollectorRegistry):
            found.append(registry)
    return found


def defined_series() -> dict[str, str]:
    """Every series name pinpipe's registries can expose -> the family it belongs to."""
    registries = [prometheus_client.REGISTRY]
    for name in metric_modules():
        registries.extend(_registries(importlib.import_module(name)))
    series: dict[str, str] = {}
    for registry in registries:
        for family in registry.collect():
            if not family.name.startswith("pinpipe_"):
                continue
            for suffix in SERIES_SUFFIXES.get(family.type, ("",)):
                series[family.name + suffix] = family.name
    return series


def referenced_names(expr: str) -> set[str]:
    """pinpipe series names in a PromQL expression."""
    return set(METRIC_NAME.findall(expr))


def check_references(exprs: dict[str, str], defined: dict[str, str]) -> tuple[list[str], set[str]]:
    """Problems (unknown names) and pending names (allowed, see PENDING_PREFIXES)."""
    problems: list[str] = []
    pending: set[str] = set()
    for where, expr in exprs.items():
        for name in sorted(referenced_names(expr)):
            if name in defined:
                continue
            prefix = next((p for p in PENDING_PREFIXES if name.startswith(p)), None)
            if prefix is not None and not any(d.startswith(prefix) for d in defined):
                pending.add(name)
                continue
            problems.append(f"{where}: {name} is not a metric pinpipe defines")
    return problems, pending
