"""Kinesis stream management through API Gateway: ``GET /streams`` (ListStreams) and
``POST|GET|DELETE /streams/<stream>`` (CreateStream, DescribeStream, DeleteStream).

What they do to the topics is :mod:`pinpipe.ingest.streams`. Answers and errors are Kinesis's
JSON, errors ``{"__type": "ResourceNotFoundException", "message": ...}`` with the statuses
Kinesis uses (400 for what the client can change); a broker that does not answer within
``ingest.admin_timeout_s``, or that the producer already knows to be down, gets 503
``ServiceUnavailable`` with Retry-After. The API key is checked as on every route (401 in the
proxy's shape). Requests are checked before the broker is asked, so a bad one gets its 400
even while the broker is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from pinpipe.config import Settings
from pinpipe.ingest.auth import require_api_key
from pinpipe.ingest.body import JSON, media_type, read_body
from pinpipe.ingest.deps import PublisherDep, SettingsDep, StreamAdminDep
from pinpipe.ingest.errors import IngestError, KinesisError
from pinpipe.ingest.openapi import kinesis_error_responses, request_body
from pinpipe.ingest.publisher import Publisher
from pinpipe.ingest.schemas import (
    KinesisCreateStream,
    KinesisDescribeStreamReply,
    KinesisEmptyReply,
    KinesisListStreamsReply,
)
from pinpipe.ingest.streams import (
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    check_integer,
    check_name,
    creation,
    page,
    pipeline_table,
    stream_summary,
)
from pinpipe.services.inspect.offsets import InspectError
from pinpipe.services.topics import TopicError

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/streams", tags=["Kinesis (API Gateway)"], dependencies=[Depends(require_api_key)]
)

MEDIA_TYPES = (JSON, "application/x-amz-json-1.1")
MAX_BODY_BYTES = 64 * 1024  # CreateStream's body is a few fields
PAGE_MAX = 100  # ListStreams answers at most 100 names, whatever its Limit (as Kinesis does)
LIMIT_MAX = 10_000  # the largest Limit Kinesis accepts
ERRORS = kinesis_error_responses(400, 401, 502, 503)

T = TypeVar("T")

_NAME_PARAMETER = {
    "type": "string", "minLength": 1, "maxLength": NAME_MAX_LENGTH, "pattern": f"^{NAME_PATTERN}$",
}  # fmt: skip
LIST_PARAMETERS = {
    "parameters": [
        {"name": "Limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": LIMIT_MAX, "default": PAGE_MAX}},
        {"name": "ExclusiveStartStreamName", "in": "query", "required": False,
         "schema": _NAME_PARAMETER},
        {"name": "NextToken", "in": "query", "required": False, "schema": _NAME_PARAMETER,
         "description": "The NextToken of the previous page."},
    ]
}  # fmt: skip


def _json(document: dict[str, Any]) -> Response:
    return Response(orjson.dumps(document), media_type=JSON)


async def _on_broker(
    settings: Settings, publisher: Publisher, call: Callable[..., T], *args: Any
) -> T:
    """``call(*args)`` in a thread, bounded in time; broker trouble becomes a Kinesis 503."""
    retry_after = {"Retry-After": str(settings.ingest.retry_after_s)}
    unavailable = KinesisError(
        503, "ServiceUnavailable", "Kafka broker unavailable; retry later.", retry_after
    )
    if not publisher.available:  # the producer's breaker is open: answer at once, as PUT does
        raise unavailable
    try:
        # The calls bound themselves by admin_timeout_s; the margin covers a stuck one.
        return await asyncio.wait_for(
            asyncio.to_thread(call, *args), settings.ingest.admin_timeout_s + 2.0
        )
    except TimeoutError:
        raise unavailable from None
    except (TopicError, InspectError) as exc:
        logger.warning("stream management: %s", exc)
        if exc.transient:
            raise unavailable from None
        raise KinesisError(502, "InternalFailure", f"The broker refused: {exc}") from None


def _query_limit(text: str | None) -> int:
    if text is None:
        return PAGE_MAX
    try:
        value: Any = int(text)
    except ValueError:
        value = text
    return check_integer(value, "limit", 1, LIMIT_MAX)


@router.get(
    "",
    summary="ListStreams",
    response_model=KinesisListStreamsReply,
    responses=ERRORS,
    openapi_extra=LIST_PARAMETERS,
)
async def list_streams(
    request: Request, settings: SettingsDep, publisher: PublisherDep, admin: StreamAdminDep
) -> Response:
    """The table streams whose topics exist, each once as `<prefix>-<table>`, sorted."""
    query = request.query_params
    limit = min(_query_limit(query.get("Limit")), PAGE_MAX)
    # NextToken (the last name of the previous page) wins over the start name; both are
    # checked, so a malformed one is refused even when the other wins.
    starts = [
        check_name(value, field)
        for parameter, field in (("NextToken", "nextToken"),
                                 ("ExclusiveStartStreamName", "exclusiveStartStreamName"))
        if (value := query.get(parameter)) is not None
    ]  # fmt: skip
    start = starts[0] if starts else None
    names, more = page(await _on_broker(settings, publisher, admin.names), limit, start)
    answer: dict[str, Any] = {"StreamNames": names, "HasMoreStreams": more}
    if more:
        answer["NextToken"] = names[-1]
    answer["StreamSummaries"] = [stream_summary(name) for name in names]
    return _json(answer)


async def _create_document(request: Request) -> dict[str, Any]:
    """CreateStream's body as an object; an empty body is ``{}``."""
    try:
        body = await read_body(request, MAX_BODY_BYTES)
    except IngestError as exc:  # too large
        raise KinesisError(exc.status, "SerializationException", exc.message) from None
    if not body.strip():
        return {}
    media = media_type(request)
    if media and media not in MEDIA_TYPES:
        raise KinesisError(
            415,
            "SerializationException",
            f"Unsupported media type {media}; expected one of {', '.join(MEDIA_TYPES)}.",
        )
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise KinesisError(400, "SerializationException", f"Malformed JSON: {exc}") from None
    if not isinstance(document, dict):
        raise KinesisError(400, "SerializationException", "The body must be a JSON object.")
    return document


@router.post(
    "/{stream}",
    summary="CreateStream",
    response_model=KinesisEmptyReply,
    responses=kinesis_error_responses(400, 401, 413, 415, 502, 503),
    openapi_extra=request_body(KinesisCreateStream, MEDIA_TYPES, required=False),
)
async def create_stream(
    stream: str,
    request: Request,
    settings: SettingsDep,
    publisher: PublisherDep,
    admin: StreamAdminDep,
) -> Response:
    """Creates the table's topic when it is missing; a name that maps to no table is refused
    (InvalidArgumentException), an existing one is ResourceInUseException."""
    document = await _create_document(request)
    table, shards = creation(stream, document.get("ShardCount"), settings.broker.partitions)
    await _on_broker(settings, publisher, admin.create, stream, table, shards)
    return _json({})


@router.get(
    "/{stream}",
    summary="DescribeStream",
    response_model=KinesisDescribeStreamReply,
    responses=kinesis_error_responses(400, 401, 502, 503),
)
async def describe_stream(
    stream: str, settings: SettingsDep, publisher: PublisherDep, admin: StreamAdminDep
) -> Response:
    """The table's topic as a stream: its partitions are the shards."""
    table = pipeline_table(stream)
    description = await _on_broker(settings, publisher, admin.describe, stream, table)
    return _json(description.as_kinesis())


@router.delete(
    "/{stream}",
    summary="DeleteStream",
    response_model=KinesisEmptyReply,
    responses=kinesis_error_responses(400, 401, 502, 503),
)
async def delete_stream(
    stream: str, settings: SettingsDep, publisher: PublisherDep, admin: StreamAdminDep
) -> Response:
    """Refused (AccessDeniedException) unless `ingest.kinesis_allow_delete` is set: deleting the
    table's topic deletes the pipeline's records."""
    table = pipeline_table(stream)
    await _on_broker(settings, publisher, admin.delete, stream, table)
    return _json({})
