"""Settings of ``pinpipe up`` and the dashboard it starts."""

from __future__ import annotations

from pydantic import BaseModel, Field


class DashboardSettings(BaseModel):
    """The dashboard (``pinpipe dashboard``, started by ``pinpipe up``): one read-only page."""

    host: str = Field("127.0.0.1", description="Bind address of the dashboard.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the page, /api, /healthz and /metrics.")
    metrics_urls: dict[str, str] = Field(
        default_factory=dict,
        description="Components' /metrics addresses by name (ingest, lake-sink, stream); unset ones "
        "come from a running `pinpipe up` or the default ports.",
    )


class UpSettings(BaseModel):
    """``pinpipe up``: the ports of what it starts, and how it supervises the processes."""

    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    lake_metrics_port: int = Field(9101, ge=0, le=65535, description="Lake sink /metrics; 0: a free port.")
    stream_metrics_port: int = Field(9102, ge=0, le=65535, description="Stream job /metrics; 0: a free port.")
    health_timeout_s: float = Field(120.0, gt=0, description="How long a component may take to become healthy.")
    restart_backoff_s: float = Field(1.0, gt=0, description="First restart delay; doubles on each restart.")
    restart_backoff_max_s: float = Field(30.0, gt=0, description="Longest restart delay.")
    max_restarts: int = Field(5, ge=0, description="Restarts allowed within restart_window_s before giving up.")
    restart_window_s: float = Field(300.0, gt=0, description="Window of max_restarts.")
    stop_timeout_s: float = Field(
        30.0, gt=0, description="SIGTERM grace before SIGKILL (the sink flushes, the stream ends its batch)."
    )



WILDCARD_HOSTS = ("0.0.0.0", "::")


def client_host(bind_host: str) -> str:
    """The host a client on this machine connects to, to reach a server bound to ``bind_host``.

    A wildcard bind address (``0.0.0.0``, ``::``) listens everywhere but is no address to
    connect to: clients use loopback. Any other host is reached as it is.
    """
    return "127.0.0.1" if bind_host in WILDCARD_HOSTS else bind_host
