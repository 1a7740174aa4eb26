"""Running the ingest API: ``pinpipe api`` calls :func:`serve`.

With ``ingest.workers > 1`` uvicorn starts worker processes that build the app themselves
(:func:`worker_app`); they receive the resolved settings through the environment of the
server process (variable ``_PINPIPE_INGEST_SETTINGS``, never printed or logged).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

from pinpipe.config import Settings
from pinpipe.ingest.auth import check_bind_allowed
from pinpipe.ingest.metrics import MULTIPROCESS_DIR_ENV

WORKER_SETTINGS_ENV = "_PINPIPE_INGEST_SETTINGS"


def with_bootstrap(settings: Settings, bootstrap_servers: str) -> Settings:
    """``settings`` with ``broker.bootstrap_servers`` set."""
    broker = settings.broker.model_copy(update={"bootstrap_servers": bootstrap_servers})
    return settings.model_copy(update={"broker": broker})


def serve(settings: Settings) -> None:
    """Serve the API on ``ingest.host:ingest.port`` until interrupted.

    Refuses (:class:`pinpipe.ingest.auth.BindRefused`) a non-loopback address without API keys
    unless ``ingest.insecure``. The broker is the configured one, a running embedded one, or
    an embedded one started for as long as the server runs.
    """
    import uvicorn

    from pinpipe.services.resolve import kafka_bootstrap

    check_bind_allowed(settings)
    ingest = settings.ingest
    with kafka_bootstrap(settings) as bootstrap:
        resolved = with_bootstrap(settings, bootstrap)
        common: dict[str, Any] = {
            "host": ingest.host,
            "port": ingest.port,
            "access_log": False,  # paths only, but keep request logging out of the hot path
            "log_level": "info",
            "proxy_headers": False,
            "server_header": False,
        }
        if ingest.workers == 1:
            from pinpipe.ingest.app import create_app

            uvicorn.Server(uvicorn.Config(create_app(resolved), **common)).run()
            return
        os.environ[WORKER_SETTINGS_ENV] = orjson.dumps(_plain(resolved.model_dump())).decode()
        # The workers' metrics meet in files here (see pinpipe.ingest.metrics); a new, empty
        # directory per server, or the counts of an earlier run would be added in.
        metrics_dir = tempfile.mkdtemp(prefix="pinpipe-ingest-metrics-")
        os.environ[MULTIPROCESS_DIR_ENV] = metrics_dir
        try:
            uvicorn.run(
                "pinpipe.ingest.server:worker_app", factory=True, workers=ingest.workers, **common
            )
        finally:
            os.environ.pop(WORKER_SETTINGS_ENV, None)
            os.environ.pop(MULTIPROCESS_DIR_ENV, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)


def worker_app():  # -> FastAPI
    """uvicorn's app factory in each worker process."""
    from pinpipe.ingest.app import create_app

    document = os.environ.get(WORKER_SETTINGS_ENV)
    if document is None:
        raise RuntimeError(f"{WORKER_SETTINGS_ENV} is not set: start workers through serve()")
    return create_app(Settings(**orjson.loads(document)))


def _plain(value: Any) -> Any:
    """Settings as JSON-able data with secrets revealed (for the workers only)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
