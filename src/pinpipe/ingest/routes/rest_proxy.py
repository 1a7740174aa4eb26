"""Kafka REST Proxy v2: ``POST /topics/<anything>.<table>``, ``GET /topics[/<topic>]``.

The client's topic only selects the table: ``<user_id>.pin`` (or any ``<x>.pin``, or ``pin``)
is written to pinpipe's own topic ``<prefix>.pin``, so every client feeds one set of topics.
Per-record ``key`` and ``partition`` are ignored (the key is the natural key). The reply has
one slot per record, in order; an invalid record's slot carries ``error_code`` 42202 and its
reason, and the record is in the dead-letter topic. If the broker does not acknowledge every
record, the whole request gets 503 (see :mod:`pinpipe.ingest.errors`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from pinpipe.events import Table, topic_name
from pinpipe.ingest.auth import require_api_key
from pinpipe.ingest.body import (
    JSON,
    REST_PROXY_JSON,
    REST_PROXY_REPLY,
    parse_json,
    read_body,
    require_media_type,
    require_object,
    require_record_list,
)
from pinpipe.ingest.deps import IngestorDep, PublisherDep, SettingsDep
from pinpipe.ingest.errors import INVALID_RECORD, NOT_FOUND, IngestError
from pinpipe.ingest.openapi import error_responses, request_body
from pinpipe.ingest.records import Incoming
from pinpipe.ingest.schemas import RestProxyReply, RestProxyRequest, TopicInfo

router = APIRouter(
    prefix="/topics", tags=["Kafka REST Proxy v2"], dependencies=[Depends(require_api_key)]
)

MEDIA_TYPES = (REST_PROXY_JSON, JSON)
SOURCE = "rest-proxy"


def table_of_topic(topic: str) -> Table:
    """The table a client's topic name means, or the proxy's 404."""
    suffix = topic.rpartition(".")[2]
    try:
        return Table(suffix)
    except ValueError:
        raise IngestError(404, NOT_FOUND, "Topic not found.") from None


class ProxyReply(JSONResponse):
    """A REST-proxy answer: compact JSON as ``application/vnd.kafka.v2+json``, as the proxy
    sends it (and so the media type the OpenAPI document gives the routes' 200s)."""

    media_type = REST_PROXY_REPLY

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _reply(document: object) -> Response:
    return ProxyReply(document)


@router.get(
    "",
    summary="List the topics a client can produce to",
    response_model=list[str],
    response_class=ProxyReply,
    responses=error_responses(401),
)
async def list_topics(settings: SettingsDep) -> Response:
    return _reply([topic_name(settings.broker.topic_prefix, table) for table in Table])


@router.get(
    "/{topic}",
    summary="Describe the pinpipe topic a client topic maps to",
    response_model=TopicInfo,
    response_class=ProxyReply,
    responses=error_responses(401, 404, 503),
)
async def describe_topic(topic: str, settings: SettingsDep, publisher: PublisherDep) -> Response:
    table = table_of_topic(topic)
    partitions = await asyncio.to_thread(
        publisher.describe_topic, topic_name(settings.broker.topic_prefix, table)
    )
    return _reply(
        {
            "name": topic,
            "configs": {},
            "partitions": [
                {
                    "partition": partition,
                    "leader": leader,
                    "replicas": [
                        {"broker": broker, "leader": broker == leader, "in_sync": broker in isrs}
                        for broker in replicas
                    ],
                }
                for partition, leader, replicas, isrs in partitions
            ],
        }
    )


@router.post(
    "/{topic}",
    summary="Produce records (JSON embedded format)",
    response_model=RestProxyReply,
    response_class=ProxyReply,
    responses=error_responses(400, 401, 404, 413, 415, 422, 429, 502, 503),
    openapi_extra=request_body(RestProxyRequest, MEDIA_TYPES),
)
async def produce(
    topic: str, request: Request, settings: SettingsDep, ingestor: IngestorDep
) -> Response:
    table = table_of_topic(topic)
    require_media_type(request, MEDIA_TYPES)
    limits = settings.ingest
    document = require_object(parse_json(await read_body(request, limits.max_body_bytes)))
    items = require_record_list(document, "records", limits.max_records_per_request)
    incoming = [
        Incoming(table, item["value"])
        if isinstance(item, dict) and "value" in item
        else Incoming(table, item, error="record: expected an object with a 'value' field")
        for item in items
    ]
    outcomes = await ingestor.ingest(incoming, SOURCE)
    offsets = [
        {
            "partition": outcome.partition,
            "offset": outcome.offset,
            "error_code": None,
            "error": None,
        }
        if outcome.accepted
        else {
            "partition": None,
            "offset": None,
            "error_code": INVALID_RECORD,
            "error": outcome.error,
        }
        for outcome in outcomes
    ]
    return _reply({"offsets": offsets, "key_schema_id": None, "value_schema_id": None})
