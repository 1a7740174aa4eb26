"""Serving the dashboard: ``pinpipe dashboard`` and ``pinpipe up`` call :func:`serve_dashboard`.

The dashboard is told where each component's ``/metrics`` is; it never asks ``pinpipe up``
(the platform above it) itself.
"""

from __future__ import annotations

from pinpipe.config import Settings, client_host

COMPONENTS = ("ingest", "lake-sink", "stream")


def default_metrics_urls(settings: Settings, running_ports: dict[str, int]) -> dict[str, str]:
    """Where each component's ``/metrics`` is: ``up.dashboard.metrics_urls``, else the ports
    given in ``running_ports`` (those a running ``pinpipe up`` recorded), else the settings'
    ports."""
    ports = {
        "ingest": settings.ingest.port,
        "lake-sink": settings.up.lake_metrics_port,
        "stream": settings.up.stream_metrics_port,
    } | running_ports
    hosts = {"ingest": client_host(settings.ingest.host)}
    urls = {name: f"http://{hosts.get(name, '127.0.0.1')}:{ports[name]}/metrics" for name in COMPONENTS}
    return urls | settings.up.dashboard.metrics_urls


def serve_dashboard(settings: Settings, dsn: str, urls: dict[str, str]) -> None:
    """Serve the dashboard on ``up.dashboard.host:port`` until interrupted (SIGINT/SIGTERM)."""
    import uvicorn

    from pinpipe.serve.dashboard.app import create_dashboard

    dashboard = settings.up.dashboard
    app = create_dashboard(settings, dsn, urls)
    uvicorn.Server(
        uvicorn.Config(app, host=dashboard.host, port=dashboard.port, log_level="warning",
                       access_log=False, server_header=False)
    ).run()
