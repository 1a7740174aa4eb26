"""``/healthz`` (the process answers), ``/readyz`` (the broker answers and the producer queue
has room) and ``/metrics`` (Prometheus). No authentication, so probes and scrapers need no key.
"""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from pinpipe.ingest.deps import PublisherDep
from pinpipe.ingest.metrics import CONTENT_TYPE
from pinpipe.ingest.openapi import error_responses
from pinpipe.ingest.schemas import HealthReply, ReadyReply

router = APIRouter(tags=["Health"])


@router.get(
    "/healthz",
    summary="The process is alive",
    response_model=HealthReply,
    responses=error_responses(),
)
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get(
    "/readyz",
    summary="The broker is reachable and the producer queue is not full",
    response_model=ReadyReply,
    responses={
        **error_responses(),
        503: {"model": ReadyReply, "description": "Not ready (Retry-After says when to look again)."},
    },
)
async def readyz(publisher: PublisherDep) -> Response:
    reachable = await asyncio.to_thread(publisher.probe, 1.0)
    depth = publisher.queue_depth()
    full = publisher.queue_full()
    ready = reachable and not full
    body = {
        "status": "ready" if ready else "unavailable",
        "broker": "reachable" if reachable else "unreachable",
        "queue_depth": depth,
        "queue_full": full,
    }
    headers = None if ready else {"Retry-After": str(publisher.retry_after_s)}
    return Response(
        orjson.dumps(body), 200 if ready else 503, headers, media_type="application/json"
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}},
               **error_responses()},
)  # fmt: skip
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
