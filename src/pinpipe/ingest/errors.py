"""Errors of the ingest API and the error bodies failures answer with.

Every non-2xx answer carries the Kafka REST Proxy's error body,
``{"error_code": <int>, "message": "<text>"}``, so existing clients parse it whatever route
they called, except the Kinesis stream-management routes (ListStreams, CreateStream,
DescribeStream, DeleteStream): their clients read Kinesis's own errors,
``{"__type": "ResourceNotFoundException", "message": "<text>"}`` (:class:`KinesisError`); their
401 stays the proxy's, as on every route. ``error_code`` is the HTTP status for generic
failures (as the proxy does for its own 404/405/415) or a five-digit code naming the cause:

=======  ====================================================================
40101    missing or invalid API key (401)
40401    topic or stream not found (404)
42201    request envelope invalid, e.g. ``records`` missing or too many (422)
42202    the record was invalid and went to the dead-letter topic (422, single-record routes;
         also the per-record code in REST-proxy replies)
41301    body or record too large (413)
43101    request headers too large (431)
42901    producer queue full (429, retry later)
50301    broker unavailable: nothing in the request was acknowledged (503, retry later)
50201    the broker refused a record for a non-transient reason (502)
=======  ====================================================================

429 and 503 carry ``Retry-After``: the client may retry the whole request. Records of a request
answered with an error may still have been written (e.g. before the broker went down); a retry
duplicates them, and duplicates are normal input downstream (keyed by natural key).
"""

from __future__ import annotations

import logging
from http import HTTPStatus

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from pinpipe.errors import PinpipeError
from pinpipe.ingest.delivery import BrokerUnavailable, PublishError, QueueFull

logger = logging.getLogger(__name__)

UNAUTHORIZED = 40101
NOT_FOUND = 40401
INVALID_REQUEST = 42201
INVALID_RECORD = 42202
TOO_LARGE = 41301
HEADERS_TOO_LARGE = 43101
QUEUE_FULL = 42901
BROKER_UNAVAILABLE = 50301
BROKER_REFUSED = 50201


class IngestError(PinpipeError):
    """A request that cannot be served; becomes a proxy-style error answer.

    ``transient`` (and ``retriable``, its HTTP reading) is True when the same request may
    succeed later (429/503).
    """

    def __init__(
        self,
        status: int,
        error_code: int,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, transient=status in (429, 503))
        self.status = status
        self.error_code = error_code
        self.message = message
        self.headers = headers or {}

    @property
    def retriable(self) -> bool:
        return self.transient

    @classmethod
    def of_publish(cls, error: PublishError) -> IngestError:
        """The HTTP answer to a publish that failed: the one place a broker's trouble becomes a
        status (503/429 with ``Retry-After`` when transient, 502 when the broker refused)."""
        if isinstance(error, BrokerUnavailable):
            return cls(503, BROKER_UNAVAILABLE, str(error), {"Retry-After": str(error.retry_after_s)})
        if isinstance(error, QueueFull):
            return cls(429, QUEUE_FULL, str(error), {"Retry-After": str(error.retry_after_s)})
        return cls(502, BROKER_REFUSED, str(error))


class KinesisError(Exception):
    """A Kinesis stream-management request that cannot be served, in Kinesis's error shape.

    ``error_type`` is Kinesis's exception name (``ResourceNotFoundException``, ...); Kinesis
    answers 400 for all of its client errors, 503 ``ServiceUnavailable`` when it cannot.
    """

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers or {}


def error_body(error_code: int, message: str) -> bytes:
    """The proxy-style error body as compact JSON bytes."""
    return orjson.dumps({"error_code": error_code, "message": message})


def error_response(
    status: int, error_code: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        error_body(error_code, message), status, headers=headers, media_type="application/json"
    )


def _generic_message(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


async def _ingest_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IngestError)
    return error_response(exc.status, exc.error_code, exc.message, exc.headers)


async def _publish_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PublishError)
    return await _ingest_error(request, IngestError.of_publish(exc))


async def _kinesis_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KinesisError)
    # application/json, as API Gateway answers in front of Kinesis (Kinesis itself says
    # application/x-amz-json-1.1); clients parse the body either way.
    body = orjson.dumps({"__type": exc.error_type, "message": exc.message})
    return Response(body, exc.status, headers=exc.headers, media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    # Starlette's own 404/405 carry the bare reason phrase; answer them as the proxy does.
    generic = _generic_message(exc.status_code)
    detail = exc.detail if isinstance(exc.detail, str) else ""
    message = generic if not detail or generic.endswith(f" {detail}") else detail
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
    return error_response(exc.status_code, exc.status_code, message, headers)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves on the request's path. Starlette's own 405 names only
    the first route that matched the path (``GET /topics/{topic}`` without its ``POST``)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods.update(route.methods or ())
    return ", ".join(sorted(methods))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for item in exc.errors()[:5]:
        location = ".".join(str(part) for part in item.get("loc", ()))
        parts.append(f"{location}: {item.get('msg', 'invalid')}")
    return error_response(422, INVALID_REQUEST, "; ".join(parts) or "invalid request")


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # A bug, not bad input: log the type and route only (never the body).
    logger.error(
        "unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc
    )
    return error_response(500, 500, "Internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error answer proxy-style, including FastAPI's and Starlette's own (Kinesis
    errors in their own shape)."""
    app.add_exception_handler(IngestError, _ingest_error)
    app.add_exception_handler(PublishError, _publish_error)
    app.add_exception_handler(KinesisError, _kinesis_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
