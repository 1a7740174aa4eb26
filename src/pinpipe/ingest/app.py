"""The ingest API's FastAPI application: wiring only.

``create_app(settings)`` needs ``settings.broker.bootstrap_servers`` set (``pinpipe api``
resolves it first, see :mod:`pinpipe.ingest.server`). Nothing connects when the app is built:
the lifespan starts the producer and makes sure the topics exist.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from pinpipe import __version__
from pinpipe.config import Settings
from pinpipe.ingest.errors import install_error_handlers
from pinpipe.ingest.limits import HeaderLimitMiddleware
from pinpipe.ingest.metrics import IngestMetrics, RequestMetricsMiddleware
from pinpipe.ingest.openapi import install_openapi
from pinpipe.ingest.publisher import Publisher
from pinpipe.ingest.records import Ingestor
from pinpipe.ingest.routes import health, kinesis, kinesis_admin, legacy, native, rest_proxy
from pinpipe.ingest.streams import StreamAdmin

logger = logging.getLogger(__name__)

DESCRIPTION = """HTTP to Kafka for pin, geo and user records.

Accepts the wire formats of existing clients (Kafka REST Proxy v2, Kinesis through API Gateway,
the first-generation FastAPI) and pinpipe's own batch format. Success means the broker
acknowledged the record. Every error answers `{"error_code": ..., "message": ...}`, except the
Kinesis stream-management routes (`GET /streams`, `POST|GET|DELETE /streams/{stream}`), which
answer Kinesis's own `{"__type": ..., "message": ...}`.

429 and 503 carry `Retry-After`: retry the whole request then. Records of a request answered
503 may still have been written: those already sent when the broker stalled are acknowledged
late, after the answer. A retry then writes them twice; that is expected input downstream: the
raw lake keeps both copies (raw is raw), the batch layer's clean tables and the speed layer's
PostgreSQL tables keep one row per natural key (the last arrival).

What this document's schemas cannot say, and the API refuses with its usual error: a number
with a fraction part where an integer is declared (`2540.0`, JSON Schema's integer includes
it; the raw contract's numbers are strict), a Kinesis `Data` that is not a row of the stream's
table, a datetime whose zone moves it out of years 1..9999, CreateStream of a table's stream
(it always exists: `ResourceInUseException`) and DeleteStream unless
`ingest.kinesis_allow_delete` (`AccessDeniedException`).
"""


def create_app(settings: Settings) -> FastAPI:
    """The ingest API for ``settings`` (bootstrap servers already resolved)."""
    bootstrap = settings.broker.bootstrap_servers
    if not bootstrap:
        raise ValueError(
            "create_app needs settings.broker.bootstrap_servers; resolve it with "
            "pinpipe.services.resolve.kafka_bootstrap(settings) first"
        )
    metrics = IngestMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What the broker acknowledged, kept in the lake's ledger: how much a broker that came
        # back empty lost is known even if no sink was running (pinpipe.lake.logs).
        from pinpipe.lake.logs import ack_recorder

        client_config = settings.broker.client_config(bootstrap)
        ingest = settings.ingest
        publisher = Publisher(
            client_config,
            produce_timeout_s=ingest.produce_timeout_s,
            retry_after_s=ingest.retry_after_s,
            linger_ms=ingest.linger_ms,
            queue_max_messages=ingest.queue_max_messages,
            on_broker_error=metrics.broker_error,
            on_acked=ack_recorder(settings),
        )
        publisher.start()
        metrics.bind_publisher(publisher.queue_depth, lambda: publisher.available)
        app.state.publisher = publisher
        app.state.ingestor = Ingestor(
            publisher, settings.broker.topic_prefix, ingest.max_record_bytes, metrics
        )
        await asyncio.to_thread(_ensure_topics, settings, bootstrap)
        try:
            yield
        finally:
            await asyncio.to_thread(publisher.close)
            metrics.close()

    app = FastAPI(
        title="pinpipe ingest API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.api_key_hashes = tuple(settings.ingest.api_key_hashes)
    app.state.streams = StreamAdmin.from_settings(settings)
    install_error_handlers(app)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    # Added last, so it runs first: an oversized header block is refused before anything else.
    app.add_middleware(HeaderLimitMiddleware, max_bytes=settings.ingest.max_header_bytes)
    routers = (rest_proxy.router, kinesis.router, kinesis_admin.router, legacy.router,
               native.router, health.router)  # fmt: skip
    for router in routers:
        app.include_router(router)
    install_openapi(app)
    return app


def _ensure_topics(settings: Settings, bootstrap: str) -> None:
    """Create the topics if missing. A broker that is down now is not fatal: the API starts,
    answers 503 and /readyz says why, and recovers when the broker is back."""
    from pinpipe.services.topics import TopicError, ensure_pipeline_topics

    try:
        ensure_pipeline_topics(settings, bootstrap, timeout=5.0)
    except TopicError as exc:
        logger.warning("could not make sure the topics exist: %s", exc)
