"""Reading request bodies: content type, size limit, JSON parsing, all before any record work.

Bodies are parsed here with orjson rather than by FastAPI's body models so that one bad
record gets a per-record error instead of failing the whole request, and so that large batches
stay cheap. The OpenAPI schema still documents each body (see :mod:`pinpipe.ingest.schemas`).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from pinpipe.ingest.errors import INVALID_REQUEST, TOO_LARGE, IngestError

JSON = "application/json"
REST_PROXY_JSON = "application/vnd.kafka.json.v2+json"
REST_PROXY_REPLY = "application/vnd.kafka.v2+json"
NDJSON = "application/x-ndjson"


def media_type(request: Request) -> str:
    """The request's media type, lower-case, without parameters (``charset=...``)."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def require_media_type(request: Request, accepted: tuple[str, ...]) -> str:
    media = media_type(request)
    if media not in accepted:
        shown = media or "none"
        raise IngestError(
            415,
            415,
            f"HTTP 415 Unsupported Media Type: {shown}; expected one of {', '.join(accepted)}",
        )
    return media


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) anything over ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit, at_least=True)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int, at_least: bool = False) -> IngestError:
    amount = f"at least {size}" if at_least else str(size)
    return IngestError(
        413, TOO_LARGE, f"Request body too large: {amount} bytes, the limit is {limit} bytes."
    )


def parse_json(body: bytes) -> Any:
    """The body as JSON, or 400 with the parser's position (never the content)."""
    if not body.strip():
        raise IngestError(400, 400, "Malformed JSON: the request body is empty.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngestError(400, 400, f"Malformed JSON: {exc}") from None


def require_object(document: Any, what: str = "the request body") -> dict[str, Any]:
    if not isinstance(document, dict):
        raise IngestError(422, INVALID_REQUEST, f"{what} must be a JSON object.")
    return document


def non_text_field(document: dict[str, Any], *fields: str) -> str | None:
    """The first of ``fields`` that is present, not null and not a string (None: all fine).
    Fields pinpipe does not use (Kinesis's ``StreamName``, ``PartitionKey``) are still held to
    the type the API documents."""
    return next((field for field in fields
                 if document.get(field) is not None and not isinstance(document[field], str)), None)


def require_optional_text(document: dict[str, Any], *fields: str) -> None:
    """Each of ``fields`` absent, null or a string (422 otherwise: :func:`non_text_field`)."""
    field = non_text_field(document, *fields)
    if field is not None:
        raise IngestError(422, INVALID_REQUEST, f"'{field}' must be a string.")


def require_record_list(document: dict[str, Any], field: str, limit: int) -> list[Any]:
    """``document[field]`` as a list of at most ``limit`` items (422 otherwise)."""
    records = document.get(field)
    if not isinstance(records, list):
        raise IngestError(422, INVALID_REQUEST, f"'{field}' must be an array of records.")
    check_record_count(len(records), limit)
    return records


def check_record_count(count: int, limit: int) -> None:
    if count > limit:
        raise IngestError(
            422,
            INVALID_REQUEST,
            f"Too many records: {count} in one request, the limit is {limit}.",
        )
