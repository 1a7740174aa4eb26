"""pinpipe's own batch route: ``POST /v1/events``.

Body: a JSON array (``application/json``) or NDJSON (``application/x-ndjson``, one object per
line, blank lines ignored) of ``{"table": "pin"|"geo"|"user", "value": {...row...}}``, tables
mixed freely. Reply, one result per record in order::

    {"results": [{"table": "pin", "partition": 0, "offset": 7, "error": null},
                 {"table": "geo", "partition": null, "offset": null, "error": "<reason>"}],
     "accepted": 1, "rejected": 1}

A rejected record (unknown table, invalid row, a malformed NDJSON line) is kept in the
dead-letter topic with the event as received as its ``original``.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from pinpipe.events import Table
from pinpipe.ingest.auth import require_api_key
from pinpipe.ingest.body import (
    JSON,
    NDJSON,
    check_record_count,
    parse_json,
    read_body,
    require_media_type,
)
from pinpipe.ingest.deps import IngestorDep, SettingsDep
from pinpipe.ingest.errors import INVALID_REQUEST, IngestError
from pinpipe.ingest.openapi import error_responses, request_body
from pinpipe.ingest.records import Incoming
from pinpipe.ingest.schemas import NativeEvent, NativeReply

router = APIRouter(prefix="/v1", tags=["Native"], dependencies=[Depends(require_api_key)])

SOURCE = "native"
TABLES = ", ".join(table.value for table in Table)


def _event(item: Any, original: bytes | None) -> Incoming:
    if not isinstance(item, dict):
        return Incoming(None, item, original, "event: expected an object with 'table' and 'value'")
    try:
        table = Table(item.get("table"))
    except ValueError:
        return Incoming(None, item, original, f"table: expected one of {TABLES}")
    if "value" not in item:
        return Incoming(table, item, original, "value: field required")
    incoming = Incoming(table, item["value"], original)
    if original is None:
        # The dead-letter topic keeps the whole event, not just its value.
        incoming.original = orjson.dumps(item)
    return incoming


def _ndjson_events(body: bytes, limit: int) -> list[Incoming]:
    lines = [line for line in body.split(b"\n") if line.strip()]
    check_record_count(len(lines), limit)
    events = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip(b"\r")
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            events.append(Incoming(None, None, line, f"line {number}: malformed JSON: {exc}"))
            continue
        events.append(_event(item, line))
    return events


@router.post(
    "/events",
    summary="Post a batch of mixed pin, geo and user records",
    response_model=NativeReply,
    responses=error_responses(400, 401, 413, 415, 422, 429, 502, 503),
    openapi_extra=request_body(NativeEvent, (JSON,), array=True),
)
async def post_events(request: Request, settings: SettingsDep, ingestor: IngestorDep) -> Response:
    media = require_media_type(request, (JSON, NDJSON))
    limits = settings.ingest
    body = await read_body(request, limits.max_body_bytes)
    if media == NDJSON:
        events = _ndjson_events(body, limits.max_records_per_request)
    else:
        document = parse_json(body)
        if not isinstance(document, list):
            raise IngestError(422, INVALID_REQUEST, "The body must be a JSON array of events.")
        check_record_count(len(document), limits.max_records_per_request)
        events = [_event(item, None) for item in document]
    outcomes = await ingestor.ingest(events, SOURCE)
    results = [
        {
            "table": outcome.table.value if outcome.table else None,
            "partition": outcome.partition,
            "offset": outcome.offset,
            "error": outcome.error,
        }
        for outcome in outcomes
    ]
    accepted = sum(1 for outcome in outcomes if outcome.accepted)
    return Response(
        orjson.dumps(
            {"results": results, "accepted": accepted, "rejected": len(outcomes) - accepted}
        ),
        media_type=JSON,
    )
