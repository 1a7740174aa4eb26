"""The HTTP bodies that real clients send (DATA_SPEC.md section 2), built from source rows.

One function per wire format turns a post (the pin, geo and user rows of one source row)
into the requests such a client would make. The emulator sends them; the ingest API's tests
use them as the reference clients.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from pinpipe.events import DatetimeStyle, Table

REST_PROXY_CONTENT_TYPE = "application/vnd.kafka.json.v2+json"
JSON_CONTENT_TYPE = "application/json"

Post = Mapping[Table, Mapping[str, Any]]


class WireFormat(str, enum.Enum):
    """The request shapes pinpipe's ingest API accepts."""

    REST_PROXY = "rest-proxy"  # Confluent Kafka REST Proxy v2, through API Gateway
    KINESIS = "kinesis"  # Kinesis PutRecord through API Gateway
    LEGACY = "legacy"  # first-generation FastAPI: POST /pin/ with the row as the body
    NATIVE = "native"  # pinpipe's own batch: POST /v1/events


@dataclass(frozen=True)
class WireRequest:
    """One HTTP request, ready to send, and the number of records it carries."""

    method: str
    path: str
    content_type: str
    body: bytes
    records: int


def encode_row(row: Mapping[str, Any], style: DatetimeStyle) -> dict[str, Any]:
    """The row as a client puts it in JSON: datetimes as strings in the client's style."""
    return {
        field: style.format(value) if isinstance(value, datetime) else value
        for field, value in row.items()
    }


def _json(document: Any) -> bytes:
    return orjson.dumps(document)


def rest_proxy_request(table: Table, row: Mapping[str, Any], user_id: str, style: DatetimeStyle) -> WireRequest:
    """``POST /topics/<user_id>.<table>`` with ``{"records":[{"value":row}]}``."""
    body = _json({"records": [{"value": encode_row(row, style)}]})
    return WireRequest("POST", f"/topics/{user_id}.{table.value}", REST_PROXY_CONTENT_TYPE, body, 1)


def kinesis_stream(user_id: str, table: Table) -> str:
    """The Kinesis stream name of a table: ``streaming-<user_id>-<table>``."""
    return f"streaming-{user_id}-{table.value}"


def kinesis_request(
    table: Table, row: Mapping[str, Any], user_id: str, style: DatetimeStyle, *, base64_data: bool = False
) -> WireRequest:
    """``PUT /streams/<stream>/record`` with ``StreamName``, ``Data`` and ``PartitionKey``.

    ``Data`` is the row object, or its JSON base64-encoded when ``base64_data`` (both are seen).
    """
    stream = kinesis_stream(user_id, table)
    data: Any = encode_row(row, style)
    if base64_data:
        data = base64.b64encode(_json(data)).decode()
    body = _json({"StreamName": stream, "Data": data, "PartitionKey": f"partition-{table.value}"})
    return WireRequest("PUT", f"/streams/{stream}/record", JSON_CONTENT_TYPE, body, 1)


def legacy_request(table: Table, row: Mapping[str, Any], style: DatetimeStyle) -> WireRequest:
    """``POST /<table>/`` with the row itself as the body."""
    return WireRequest("POST", f"/{table.value}/", JSON_CONTENT_TYPE, _json(encode_row(row, style)), 1)


def native_request(posts: Iterable[Post], style: DatetimeStyle) -> WireRequest:
    """``POST /v1/events`` with a JSON array of ``{"table": ..., "value": row}``, posts in order."""
    records = [
        {"table": table.value, "value": encode_row(row, style)}
        for post in posts
        for table, row in post.items()
    ]
    return WireRequest("POST", "/v1/events", JSON_CONTENT_TYPE, _json(records), len(records))


def encode_post(post: Post, wire_format: WireFormat, user_id: str, style: DatetimeStyle) -> list[WireRequest]:
    """The requests a client of ``wire_format`` makes for one post: pin, geo, then user."""
    if wire_format is WireFormat.NATIVE:
        return [native_request([post], style)]
    requests = []
    for table, row in post.items():
        if wire_format is WireFormat.REST_PROXY:
            requests.append(rest_proxy_request(table, row, user_id, style))
        elif wire_format is WireFormat.KINESIS:
            requests.append(kinesis_request(table, row, user_id, style))
        else:
            requests.append(legacy_request(table, row, style))
    return requests
