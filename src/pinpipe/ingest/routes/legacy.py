"""The first-generation FastAPI endpoints: ``POST /pin/``, ``/geo/``, ``/user/`` with the row as
the body. Reply: ``{"table", "partition", "offset", "error": null}``; an invalid row gets 422
and is kept in the dead-letter topic.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from pinpipe.events import RAW_MODELS, Table
from pinpipe.ingest.auth import require_api_key
from pinpipe.ingest.body import JSON, parse_json, read_body, require_media_type
from pinpipe.ingest.deps import IngestorDep, SettingsDep
from pinpipe.ingest.errors import INVALID_RECORD, IngestError
from pinpipe.ingest.openapi import error_responses, request_body
from pinpipe.ingest.records import Incoming
from pinpipe.ingest.schemas import RecordResult

router = APIRouter(tags=["Legacy FastAPI"], dependencies=[Depends(require_api_key)])

SOURCE = "legacy"


async def _post_row(
    table: Table, request: Request, settings: SettingsDep, ingestor: IngestorDep
) -> Response:
    require_media_type(request, (JSON,))
    body = await read_body(request, settings.ingest.max_body_bytes)
    (outcome,) = await ingestor.ingest([Incoming(table, parse_json(body), original=body)], SOURCE)
    if not outcome.accepted:
        raise IngestError(
            422, INVALID_RECORD, f"Invalid record, kept in the dead-letter topic: {outcome.error}"
        )
    return Response(
        orjson.dumps(
            {
                "table": table.value,
                "partition": outcome.partition,
                "offset": outcome.offset,
                "error": None,
            }
        ),
        media_type=JSON,
    )


def _register(table: Table) -> None:
    async def post_row(request: Request, settings: SettingsDep, ingestor: IngestorDep) -> Response:
        return await _post_row(table, request, settings, ingestor)

    post_row.__name__ = f"post_{table.value}"
    options: dict[str, Any] = {
        "response_model": RecordResult,
        "responses": error_responses(400, 401, 413, 415, 422, 429, 502, 503),
        "openapi_extra": request_body(RAW_MODELS[table], (JSON,)),
    }
    router.add_api_route(
        f"/{table.value}/",
        post_row,
        methods=["POST"],
        summary=f"Post one {table.value} row",
        **options,
    )
    # The same without the trailing slash, instead of a redirect some clients do not follow.
    router.add_api_route(
        f"/{table.value}", post_row, methods=["POST"], include_in_schema=False, **options
    )


for _table in Table:
    _register(_table)
