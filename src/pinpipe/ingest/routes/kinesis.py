"""Kinesis through API Gateway: ``PUT /streams/<stream>/record`` and ``.../records``
(ListStreams, CreateStream, DescribeStream, DeleteStream: :mod:`.kinesis_admin`).

Streams ``streaming-<user_id>-<table>`` (any ``<x>-<table>``) map to pinpipe's topic
``<prefix>.<table>``. ``Data`` may be the row object, the row's JSON base64-encoded, or the
row's JSON as text. ``SequenceNumber`` is the Kafka offset as text, ``ShardId`` names the Kafka
partition (``shardId-000000000002`` is partition 2). An invalid record gets 422 (single form)
or an ``ErrorCode`` entry (batch form) and is kept in the dead-letter topic.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from pinpipe.events import Table
from pinpipe.ingest.auth import require_api_key
from pinpipe.ingest.body import (
    JSON,
    non_text_field,
    parse_json,
    read_body,
    require_media_type,
    require_object,
    require_optional_text,
    require_record_list,
)
from pinpipe.ingest.deps import IngestorDep, SettingsDep
from pinpipe.ingest.errors import INVALID_RECORD, INVALID_REQUEST, NOT_FOUND, IngestError
from pinpipe.ingest.openapi import error_responses, request_body
from pinpipe.ingest.records import Incoming
from pinpipe.ingest.schemas import (
    KinesisBatchReply,
    KinesisPutRecord,
    KinesisPutRecords,
    KinesisRecordReply,
)
from pinpipe.ingest.streams import shard_id, table_of

router = APIRouter(
    prefix="/streams", tags=["Kinesis (API Gateway)"], dependencies=[Depends(require_api_key)]
)

MEDIA_TYPES = (JSON, "application/x-amz-json-1.1")
SOURCE = "kinesis"
INVALID_ERROR_CODE = "ValidationException"


def table_of_stream(stream: str) -> Table:
    table = table_of(stream)
    if table is None:
        raise IngestError(404, NOT_FOUND, "Stream not found.")
    return table


def decode_data(table: Table, data: Any) -> Incoming:
    """A Kinesis ``Data`` value as an incoming record (never raises)."""
    if not isinstance(data, str):
        return Incoming(table, data)
    text = data.encode()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = None
    if raw is not None:
        try:
            return Incoming(table, orjson.loads(raw), original=raw)
        except orjson.JSONDecodeError:
            pass  # "1234" is valid base64 too; try it as JSON text below
    try:
        return Incoming(table, orjson.loads(text), original=text)
    except orjson.JSONDecodeError:
        return Incoming(
            table, None, original=raw if raw is not None else text,
            error="Data: neither a JSON object nor base64-encoded JSON",
        )  # fmt: skip


def _entry(table: Table, item: Any) -> Incoming:
    if isinstance(item, dict):
        bad = non_text_field(item, "partition-key", "PartitionKey")
        if bad is not None:
            return Incoming(table, item, error=f"record: '{bad}' must be a string")
        for field in ("data", "Data"):
            if field in item:
                return decode_data(table, item[field])
    return Incoming(table, item, error="record: expected an object with a 'data' field")


@router.put(
    "/{stream}/record",
    summary="PutRecord",
    response_model=KinesisRecordReply,
    responses=error_responses(400, 401, 404, 413, 415, 422, 429, 502, 503),
    openapi_extra=request_body(KinesisPutRecord, (JSON,)),
)
async def put_record(
    stream: str, request: Request, settings: SettingsDep, ingestor: IngestorDep
) -> Response:
    table = table_of_stream(stream)
    require_media_type(request, MEDIA_TYPES)
    document = require_object(parse_json(await read_body(request, settings.ingest.max_body_bytes)))
    if "Data" not in document:
        raise IngestError(422, INVALID_REQUEST, "'Data' is required.")
    require_optional_text(document, "StreamName", "PartitionKey")
    (outcome,) = await ingestor.ingest([decode_data(table, document["Data"])], SOURCE)
    if not outcome.accepted:
        raise IngestError(
            422, INVALID_RECORD, f"Invalid record, kept in the dead-letter topic: {outcome.error}"
        )
    return Response(
        orjson.dumps(
            {"SequenceNumber": str(outcome.offset), "ShardId": shard_id(outcome.partition)}
        ),
        media_type=JSON,
    )


@router.put(
    "/{stream}/records",
    summary="PutRecords",
    response_model=KinesisBatchReply,
    responses=error_responses(400, 401, 404, 413, 415, 422, 429, 502, 503),
    openapi_extra=request_body(KinesisPutRecords, (JSON,)),
)
async def put_records(
    stream: str, request: Request, settings: SettingsDep, ingestor: IngestorDep
) -> Response:
    table = table_of_stream(stream)
    require_media_type(request, MEDIA_TYPES)
    limits = settings.ingest
    document = require_object(parse_json(await read_body(request, limits.max_body_bytes)))
    field = "records" if "records" in document or "Records" not in document else "Records"
    items = require_record_list(document, field, limits.max_records_per_request)
    outcomes = await ingestor.ingest([_entry(table, item) for item in items], SOURCE)
    results: list[dict[str, Any]] = [
        {"SequenceNumber": str(outcome.offset), "ShardId": shard_id(outcome.partition)}
        if outcome.accepted
        else {"ErrorCode": INVALID_ERROR_CODE, "ErrorMessage": outcome.error}
        for outcome in outcomes
    ]
    failed = sum(1 for outcome in outcomes if not outcome.accepted)
    return Response(
        orjson.dumps({"FailedRecordCount": failed, "Records": results}), media_type=JSON
    )
