"""Each wire format, end to end: real HTTP in, the exact Kafka record out (topic, key, value)."""

from __future__ import annotations

import base64

import orjson
import pytest

from tests.ingest.conftest import consume
from tests.ingest.rows import (
    GEO,
    GEO_VALUE,
    OLD_PIN,
    OLD_PIN_ID,
    OLD_PIN_VALUE,
    PIN,
    PIN_ID,
    PIN_VALUE,
    USER,
    USER_VALUE,
)

pytestmark = pytest.mark.integration

REST_PROXY = {"Content-Type": "application/vnd.kafka.json.v2+json"}


def test_rest_proxy_single_record(api_factory, kafka_bootstrap):
    api = api_factory()
    response = api.client.post(
        "/topics/0a1b2c3d4e5f.pin",
        content=orjson.dumps({"records": [{"value": PIN}]}),
        headers=REST_PROXY,
    )
    (record,) = consume(kafka_bootstrap, api.topic("pin"), 1)
    assert (record.topic, record.key, record.value, record.offset) == (
        api.topic("pin"),
        PIN_ID.encode(),
        PIN_VALUE,
        0,
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.kafka.v2+json"
    assert response.content == (
        b'{"offsets":[{"partition":%d,"offset":0,"error_code":null,"error":null}],'
        b'"key_schema_id":null,"value_schema_id":null}' % record.partition
    )


def test_rest_proxy_accepts_plain_json_and_every_table(api_factory, kafka_bootstrap):
    api = api_factory()
    for suffix, row in (("geo", GEO), ("user", USER)):
        response = api.client.post(
            f"/topics/someone.{suffix}",
            content=orjson.dumps({"records": [{"value": row, "key": "ignored", "partition": 9}]}),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        assert response.status_code == 200, response.text
    (geo,) = consume(kafka_bootstrap, api.topic("geo"), 1)
    (user,) = consume(kafka_bootstrap, api.topic("user"), 1)
    assert (geo.key, geo.value) == (b"7528", GEO_VALUE)
    assert (user.key, user.value) == (b"7528", USER_VALUE)


def test_kinesis_put_record_with_object_data(api_factory, kafka_bootstrap):
    api = api_factory()
    body = {"StreamName": "streaming-0a1b2c3d4e5f-geo", "Data": GEO, "PartitionKey": "partition-1"}
    response = api.client.put("/streams/streaming-0a1b2c3d4e5f-geo/record", json=body)
    (record,) = consume(kafka_bootstrap, api.topic("geo"), 1)
    assert (record.topic, record.key, record.value) == (api.topic("geo"), b"7528", GEO_VALUE)
    assert response.status_code == 200
    assert (
        response.content
        == b'{"SequenceNumber":"0","ShardId":"shardId-00000000000%d"}' % record.partition
    )


def test_kinesis_put_record_with_base64_data(api_factory, kafka_bootstrap):
    api = api_factory()
    data = base64.b64encode(orjson.dumps(USER)).decode()
    body = {"StreamName": "streaming-0a1b2c3d4e5f-user", "Data": data, "PartitionKey": "p"}
    response = api.client.put("/streams/streaming-0a1b2c3d4e5f-user/record", json=body)
    assert response.status_code == 200, response.text
    (record,) = consume(kafka_bootstrap, api.topic("user"), 1)
    assert (record.key, record.value) == (b"7528", USER_VALUE)


def test_kinesis_put_records_batch(api_factory, kafka_bootstrap):
    api = api_factory()
    body = {
        "records": [
            {"data": PIN, "partition-key": "a"},
            {"data": base64.b64encode(orjson.dumps(OLD_PIN)).decode(), "partition-key": "b"},
        ]
    }
    response = api.client.put("/streams/streaming-0a1b2c3d4e5f-pin/records", json=body)
    records = consume(kafka_bootstrap, api.topic("pin"), 2)
    by_key = {record.key: record for record in records}
    assert by_key[PIN_ID.encode()].value == PIN_VALUE
    assert by_key[OLD_PIN_ID.encode()].value == OLD_PIN_VALUE
    first, second = by_key[PIN_ID.encode()], by_key[OLD_PIN_ID.encode()]
    assert response.status_code == 200
    assert response.content == (
        b'{"FailedRecordCount":0,"Records":['
        b'{"SequenceNumber":"%d","ShardId":"shardId-00000000000%d"},'
        b'{"SequenceNumber":"%d","ShardId":"shardId-00000000000%d"}]}'
        % (first.offset, first.partition, second.offset, second.partition)
    )


def test_legacy_post_of_the_older_11_field_pin(api_factory, kafka_bootstrap):
    api = api_factory()
    response = api.client.post("/pin/", json=OLD_PIN)
    (record,) = consume(kafka_bootstrap, api.topic("pin"), 1)
    assert (record.key, record.value) == (OLD_PIN_ID.encode(), OLD_PIN_VALUE)
    assert response.status_code == 200
    assert response.content == (
        b'{"table":"pin","partition":%d,"offset":0,"error":null}' % record.partition
    )
    # Without the trailing slash too (no redirect).
    assert api.client.post("/geo", json=GEO).status_code == 200
    (geo,) = consume(kafka_bootstrap, api.topic("geo"), 1)
    assert geo.value == GEO_VALUE


def test_native_json_array_of_mixed_tables(api_factory, kafka_bootstrap):
    api = api_factory()
    events = [
        {"table": "pin", "value": PIN},
        {"table": "geo", "value": GEO},
        {"table": "user", "value": USER},
    ]
    response = api.client.post("/v1/events", json=events)
    (pin,) = consume(kafka_bootstrap, api.topic("pin"), 1)
    (geo,) = consume(kafka_bootstrap, api.topic("geo"), 1)
    (user,) = consume(kafka_bootstrap, api.topic("user"), 1)
    assert (pin.value, geo.value, user.value) == (PIN_VALUE, GEO_VALUE, USER_VALUE)
    assert response.status_code == 200
    assert response.content == (
        b'{"results":['
        b'{"table":"pin","partition":%d,"offset":0,"error":null},'
        b'{"table":"geo","partition":%d,"offset":0,"error":null},'
        b'{"table":"user","partition":%d,"offset":0,"error":null}],'
        b'"accepted":3,"rejected":0}' % (pin.partition, geo.partition, user.partition)
    )


def test_native_ndjson(api_factory, kafka_bootstrap):
    api = api_factory()
    body = (
        orjson.dumps({"table": "geo", "value": GEO})
        + b"\n\n"
        + orjson.dumps({"table": "user", "value": USER})
        + b"\r\n"
    )
    response = api.client.post(
        "/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2
    (geo,) = consume(kafka_bootstrap, api.topic("geo"), 1)
    (user,) = consume(kafka_bootstrap, api.topic("user"), 1)
    assert (geo.value, user.value) == (GEO_VALUE, USER_VALUE)
