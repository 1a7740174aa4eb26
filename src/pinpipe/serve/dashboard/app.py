"""The dashboard app: one page, two JSON endpoints it polls, ``/healthz`` and ``/metrics``.

- ``GET /``: the page (plain HTML + ``static/dashboard.js``, no build step, no CDN);
- ``GET /api/live``: ingest rate and rejected records, consumer lag and health per component,
  stream latency, real-time top categories / countries / posters, rows in PostgreSQL;
- ``GET /api/batch``: the latest answers, the data-quality report, the latest batch runs;
- ``GET /metrics``: the batch runs for Prometheus (:mod:`pinpipe.serve.dashboard.metrics`).

Reads only: PostgreSQL through a read-only session, the components' ``/metrics``, the
quality report file. Nothing connects before the first request.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from pinpipe.config import Settings
from pinpipe.serve.dashboard.metrics import CONTENT_TYPE, BatchRunMetrics
from pinpipe.serve.dashboard.scrape import RateTracker, scrape, summarize
from pinpipe.store.reads import ReadOnlyStore

STATIC = "pinpipe.serve.dashboard"


def quality_report(settings: Settings) -> dict | None:
    """The batch job's ``answers/_quality_report.json`` (local lake), or None before any run."""
    from pinpipe.batch.job import QUALITY_REPORT, lake_path

    path = lake_path(settings, "answers", QUALITY_REPORT)
    if "://" in path:
        return None  # an object-store lake: Grafana / the job's log show it
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class LiveFigures:
    """Scrapes the components and reads PostgreSQL, at most once per ``min_interval_s``."""

    def __init__(self, store: ReadOnlyStore, urls: dict[str, str], min_interval_s: float = 1.0) -> None:
        self.store = store
        self.urls = dict(urls)
        self.rates = RateTracker(span_s=10.0)
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._cached: tuple[float, dict] | None = None
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.urls)), thread_name_prefix="scrape")

    def get(self) -> dict:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.min_interval_s:
                self._cached = (now, self._compute())
            return self._cached[1]

    def _compute(self) -> dict:
        names = list(self.urls)
        scrapes = list(self._pool.map(lambda name: scrape(self.urls[name]), names))
        components = [summarize(name, result) for name, result in zip(names, scrapes, strict=True)]
        for component in components:
            component["url"] = self.urls[component["component"]]
        ingest = next((c for c in components if c["component"] == "ingest" and c["up"]), None)
        totals = {}
        if ingest is not None:
            totals = {k: ingest[f"{k}_total"] for k in ("accepted", "rejected", "failed")}
        rates = self.rates.observe(totals)
        figures: dict = {
            "time": time.time(),
            "ingest": {
                "up": ingest is not None,
                "accepted_total": totals.get("accepted"),
                "rejected_total": totals.get("rejected"),
                "failed_total": totals.get("failed"),
                "accepted_per_s": rates.get("accepted", 0.0),
                "rejected_per_s": rates.get("rejected", 0.0),
                "history": [
                    {"t": when, "accepted_per_s": r.get("accepted", 0.0), "rejected_per_s": r.get("rejected", 0.0)}
                    for when, r in self.rates.history
                ],
            },
            "components": components,
        }
        try:
            stream = self.store.stream_progress()
            stream_metrics = next((c for c in components if c["component"] == "stream" and c["up"]), None)
            if stream_metrics and stream_metrics.get("latency_p50_s") is not None:
                stream |= {"latency_p50_s": stream_metrics["latency_p50_s"],
                           "latency_p99_s": stream_metrics["latency_p99_s"], "latency_source": "metrics"}
            else:
                stream["latency_source"] = "postgres"
            figures |= {
                "postgres": {"up": True, "error": ""},
                "rows": self.store.row_counts(),
                "stream": stream,
                "realtime": {
                    "categories": self.store.top_categories(),
                    "countries": self.store.top_countries(),
                    "posters": self.store.top_posters(),
                },
            }
        except Exception as exc:  # PostgreSQL down: the live component figures still show
            figures |= {"postgres": {"up": False, "error": f"{type(exc).__name__}: {exc}"},
                        "rows": {}, "stream": {}, "realtime": {}}
        return figures

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def create_dashboard(settings: Settings, dsn: str, component_metrics_urls: dict[str, str]) -> FastAPI:
    """The dashboard over the PostgreSQL at ``dsn`` (read-only) and the components whose
    ``/metrics`` are at ``component_metrics_urls`` (``{"ingest": url, "lake-sink": url, ...}``)."""
    store = ReadOnlyStore(dsn)
    live = LiveFigures(store, component_metrics_urls)
    batch_metrics = BatchRunMetrics(store.run_summary)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        live.close()
        store.close()

    app = FastAPI(title="pinpipe dashboard", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    static_dir = resources.files(STATIC) / "static"
    app.mount("/static", StaticFiles(directory=str(static_dir)), name="static")

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse((static_dir / "index.html").read_text(encoding="utf-8"))

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(batch_metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/api/live")
    def api_live() -> JSONResponse:
        return JSONResponse(live.get(), headers={"Cache-Control": "no-store"})

    @app.get("/api/batch")
    def api_batch() -> JSONResponse:
        document: dict = {"quality": quality_report(settings)}
        try:
            counts, last_success = store.run_summary()
            document |= {
                "postgres": {"up": True, "error": ""},
                "answers": store.answers(),
                "runs": store.latest_runs(),
                "run_counts": counts,
                "last_success": last_success or None,
            }
        except Exception as exc:
            document |= {"postgres": {"up": False, "error": f"{type(exc).__name__}: {exc}"},
                         "answers": {}, "runs": [], "run_counts": {}, "last_success": None}
        return JSONResponse(document, headers={"Cache-Control": "no-store"})

    return app
