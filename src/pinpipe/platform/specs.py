"""The processes ``pinpipe up`` starts, each a ``pinpipe <command>``: their command lines,
environment, ports, health checks and logs, in start order."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from pinpipe.config import Settings, client_host
from pinpipe.platform.run import Component, UpRun
from pinpipe.platform.state import EMULATOR_STATS_DIR
from pinpipe.platform.supervisor import (
    ProcessSpec,
)
from pinpipe.services.broker import free_port

if TYPE_CHECKING:
    pass



def python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def _http_ok(url: str) -> bool:
    from pinpipe.serve.dashboard.scrape import http_ok

    return http_ok(url, timeout_s=1.0)


def choose_ports(settings: Settings) -> dict[str, int]:
    up = settings.up
    wanted = {
        "ingest": settings.ingest.port,
        "lake-sink": up.lake_metrics_port,
        "stream": up.stream_metrics_port,
        "dashboard": up.dashboard.port,
    }
    return {name: port or free_port() for name, port in wanted.items()}


def child_env(settings: Settings, bootstrap: str, dsn: str) -> dict[str, str]:
    # Children see the resolved broker and PostgreSQL as "configured", so none of them starts
    # an embedded one of its own. The DSN holds a password: it goes to the environment of our
    # own children only, never to a log or a record.
    from pinpipe.services.spark_cluster import child_spark_env

    return {
        "PINPIPE_DATA_DIR": str(settings.data_dir),
        "PINPIPE_BROKER__BOOTSTRAP_SERVERS": bootstrap,
        "PINPIPE_POSTGRES__DSN": dsn,
        "PYTHONUNBUFFERED": "1",
        **child_spark_env(settings),  # the Spark jobs on the embedded cluster (--spark-workers)
    }


def specs(run: UpRun, bootstrap: str) -> list[tuple[ProcessSpec, Component]]:
    settings, ports = run.settings, run.ports
    logs = settings.data_dir / "logs"
    env = child_env(settings, bootstrap, run.dsn)
    stop_s = settings.up.stop_timeout_s
    api_host = settings.ingest.host
    api_url = f"http://{client_host(api_host)}:{ports['ingest']}"
    sink_metrics = f"http://127.0.0.1:{ports['lake-sink']}/metrics"
    stream_metrics = f"http://127.0.0.1:{ports['stream']}/metrics"
    dash = settings.up.dashboard
    dash_url = f"http://{client_host(dash.host)}:{ports['dashboard']}"
    cli = "pinpipe.cli"
    out: list[tuple[ProcessSpec, Component]] = []

    out.append((
        ProcessSpec("api", python(cli, "api", "--host", api_host, "--port", str(ports["ingest"])),
                    logs / "api.log", env, health=lambda: _http_ok(f"{api_url}/readyz"),
                    address=api_url, stop_timeout_s=stop_s),
        Component("api", api_url, f"{api_url}/metrics", f"{api_url}/readyz"),
    ))  # fmt: skip
    out.append((
        ProcessSpec("lake-sink", python(cli, "sink", "--metrics-port", str(ports["lake-sink"])),
                    logs / "lake-sink.log", env, health=lambda: _http_ok(sink_metrics),
                    address=sink_metrics, stop_timeout_s=stop_s),
        Component("lake-sink", sink_metrics, sink_metrics, sink_metrics),
    ))  # fmt: skip
    # The dashboard before the stream job: the JVM's start and warm-up then have the CPU to
    # themselves (on 2 cores everything starting at once made the first micro-batch later).
    dash_env = {**env, "PINPIPE_UP__DASHBOARD__METRICS_URLS": json.dumps(
        {"ingest": f"{api_url}/metrics", "lake-sink": sink_metrics, "stream": stream_metrics})}
    if run.reader_dsn is not None:
        dash_env["PINPIPE_POSTGRES__READER_DSN"] = run.reader_dsn
    out.append((
        ProcessSpec("dashboard",
                    python(cli, "dashboard", "--host", dash.host, "--port", str(ports["dashboard"])),
                    logs / "dashboard.log", dash_env, health=lambda: _http_ok(f"{dash_url}/healthz"),
                    address=dash_url, stop_timeout_s=stop_s),
        Component("dashboard", dash_url, f"{dash_url}/metrics", f"{dash_url}/healthz"),
    ))  # fmt: skip
    if run.options.stream:
        out.append((
            ProcessSpec("stream", python(cli, "stream", "--metrics-port", str(ports["stream"])),
                        logs / "stream.log", env, health=lambda: _http_ok(stream_metrics),
                        address=stream_metrics, stop_timeout_s=stop_s),
            Component("stream", stream_metrics, stream_metrics, stream_metrics),
        ))  # fmt: skip
    if run.options.emulate_rate:
        # A bounded run's emulator ends by itself and is not restarted then; an endless one is
        # stopped by SIGTERM. Every emulator process keeps its counts in a file of its own, so
        # a restarted one adds to, rather than replaces, what the run sent (emulator_stats).
        bounded = run.options.duration_s is not None
        argv = python(cli, "emulate", "--base-url", api_url, "--rate", str(run.options.emulate_rate),
                       "--duration", str(run.options.duration_s if bounded else 365 * 86400),
                       "--stats-dir", str(settings.run_dir / EMULATOR_STATS_DIR))
        emulator_env = dict(env)
        if settings.source.dsn is not None:  # read the rows from that database, as `emulate --source-dsn`
            emulator_env["PINPIPE_SOURCE__DSN"] = settings.source.dsn.get_secret_value()
        out.append((
            ProcessSpec("emulator", argv, logs / "emulator.log", emulator_env, address=f"-> {api_url}",
                        restart=not bounded, stop_timeout_s=10.0),
            Component("emulator", f"{run.options.emulate_rate:g} posts/s -> {api_url}"),
        ))  # fmt: skip
    return out
