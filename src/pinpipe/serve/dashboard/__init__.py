"""The dashboard: one page over PostgreSQL and the components' metrics (read-only)."""

from pinpipe.serve.dashboard.app import create_dashboard
from pinpipe.serve.dashboard.server import serve_dashboard

__all__ = ["create_dashboard", "serve_dashboard"]
