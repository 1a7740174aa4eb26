"""Kinesis stream management through the API (ListStreams, CreateStream, DescribeStream,
DeleteStream), against the real API and broker, with requests shaped as API Gateway clients
send them. Topics are checked by listing all of them (naming one would create it on Tansu)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import orjson
import pytest
import requests
from confluent_kafka.admin import AdminClient

from pinpipe.ingest.auth import hash_api_key
from pinpipe.services.broker import EmbeddedBroker
from tests.ingest.conftest import make_settings, running_api
from tests.ingest.rows import PIN

pytestmark = pytest.mark.integration

AMZ_JSON = {"Content-Type": "application/x-amz-json-1.1"}
STREAM = "streaming-0a1b2c3d4e5f"  # + -pin, -geo, -user: the streams those clients use
KEY = "kinesis-admin-key"
PROVISIONED = {"StreamMode": "PROVISIONED"}


def error(response) -> tuple[int, dict]:
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.json()


def kinesis_error(error_type: str, message: str) -> tuple[int, dict]:
    return 400, {"__type": error_type, "message": message}


def arn(name: str) -> str:
    return f"arn:aws:kinesis:us-east-1:000000000000:stream/{name}"


def summary(name: str) -> dict:
    return {
        "StreamName": name,
        "StreamARN": arn(name),
        "StreamStatus": "ACTIVE",
        "StreamModeDetails": PROVISIONED,
    }


def topics_of(bootstrap: str, prefix: str) -> dict[str, int]:
    """The prefix's topics with their partition counts, from the list of all topics."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {
        name: len(topic.partitions)
        for name, topic in metadata.topics.items()
        if name.startswith(f"{prefix}.") or name.startswith(f"{prefix}-")
    }


def test_list_streams_names_each_table_once(api):
    p = api.prefix
    response = api.client.get("/streams")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "StreamNames": [f"{p}-geo", f"{p}-pin", f"{p}-user"],
        "HasMoreStreams": False,
        "StreamSummaries": [summary(f"{p}-geo"), summary(f"{p}-pin"), summary(f"{p}-user")],
    }


def test_list_streams_pages(api):
    p = api.prefix

    def names(**query) -> tuple[list[str], bool, str | None]:
        response = api.client.get("/streams", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["StreamSummaries"] == [summary(name) for name in body["StreamNames"]]
        return body["StreamNames"], body["HasMoreStreams"], body.get("NextToken")

    assert names(Limit=2) == ([f"{p}-geo", f"{p}-pin"], True, f"{p}-pin")
    assert names(Limit=2, ExclusiveStartStreamName=f"{p}-pin") == ([f"{p}-user"], False, None)
    assert names(Limit=2, NextToken=f"{p}-pin") == ([f"{p}-user"], False, None)
    assert names(Limit=1, ExclusiveStartStreamName=f"{p}-geo") == ([f"{p}-pin"], True, f"{p}-pin")
    assert names(ExclusiveStartStreamName=f"{p}-user") == ([], False, None)
    assert names(Limit=10000) == ([f"{p}-geo", f"{p}-pin", f"{p}-user"], False, None)

    assert error(api.client.get("/streams", params={"Limit": 0})) == kinesis_error(
        "ValidationException",
        "1 validation error detected: Value '0' at 'limit' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1",
    )
    assert error(api.client.get("/streams", params={"Limit": 10001})) == kinesis_error(
        "ValidationException",
        "1 validation error detected: Value '10001' at 'limit' failed to satisfy constraint: "
        "Member must have value less than or equal to 10000",
    )
    assert error(api.client.get("/streams", params={"Limit": "ten"})) == kinesis_error(
        "SerializationException", "limit: expected an integer, got 'ten'"
    )
    response = api.client.get("/streams", params={"ExclusiveStartStreamName": "a b"})
    assert error(response) == kinesis_error(
        "ValidationException",
        "1 validation error detected: Value 'a b' at 'exclusiveStartStreamName' failed to "
        "satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+",
    )


def test_describe_stream_from_its_topic(api):
    before = time.time()
    for unique_id in ("d-1", "d-2", "d-3"):
        body = orjson.dumps({"Data": {**PIN, "unique_id": unique_id}, "PartitionKey": unique_id})
        put = requests.put(f"{api.url}/streams/{STREAM}-pin/record", data=body, headers=AMZ_JSON)
        assert put.status_code == 200, put.text

    response = requests.get(f"{api.url}/streams/{STREAM}-pin", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    description = response.json()["StreamDescription"]
    created = description.pop("StreamCreationTimestamp")
    assert before - 5 <= created <= time.time() + 5  # the oldest record's time
    assert description == {
        "StreamName": f"{STREAM}-pin",
        "StreamARN": f"arn:aws:kinesis:us-east-1:000000000000:stream/{STREAM}-pin",
        "StreamStatus": "ACTIVE",
        "StreamModeDetails": PROVISIONED,
        "Shards": [
            {
                "ShardId": "shardId-000000000000",
                "HashKeyRange": {
                    "StartingHashKey": "0",
                    "EndingHashKey": "170141183460469231731687303715884105727",
                },
                "SequenceNumberRange": {"StartingSequenceNumber": "0"},
            },
            {
                "ShardId": "shardId-000000000001",
                "HashKeyRange": {
                    "StartingHashKey": "170141183460469231731687303715884105728",
                    "EndingHashKey": "340282366920938463463374607431768211455",
                },
                "SequenceNumberRange": {"StartingSequenceNumber": "0"},
            },
        ],
        "HasMoreShards": False,
        "RetentionPeriodHours": 24,
        "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
        "EncryptionType": "NONE",
    }

    # Any name ending in -geo is the geo stream; its topic holds no record yet.
    geo = api.client.get(f"/streams/{api.prefix}-geo").json()["StreamDescription"]
    assert (geo["StreamName"], geo["StreamCreationTimestamp"]) == (f"{api.prefix}-geo", 0)
    assert [shard["ShardId"] for shard in geo["Shards"]] == [
        "shardId-000000000000",
        "shardId-000000000001",
    ]


def test_describe_unknown_or_invalid_stream(api):
    assert error(api.client.get("/streams/streaming-x-comments")) == kinesis_error(
        "ResourceNotFoundException",
        "Stream streaming-x-comments under account 000000000000 not found. pinpipe's streams "
        "are the names ending in -pin, -geo or -user.",
    )
    assert error(api.client.get("/streams/no spaces-pin")) == kinesis_error(
        "ValidationException",
        "1 validation error detected: Value 'no spaces-pin' at 'streamName' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+",
    )
    long_name = "s" * 125 + "-pin"
    assert error(api.client.get(f"/streams/{long_name}")) == kinesis_error(
        "ValidationException",
        f"1 validation error detected: Value '{long_name}' at 'streamName' failed to satisfy "
        "constraint: Member must have length less than or equal to 128",
    )


def test_create_stream_refusals_create_nothing(api, kafka_bootstrap):
    p = api.prefix

    def create(name: str, body: bytes | None, headers=AMZ_JSON) -> tuple[int, dict]:
        return error(api.client.post(f"/streams/{name}", content=body, headers=headers))

    in_use = kinesis_error(
        "ResourceInUseException",
        f"Stream {STREAM}-geo under account 000000000000 already exists. It is pinpipe's geo "
        f"stream (topic {p}.geo), under any name ending in -geo.",
    )
    assert create(f"{STREAM}-geo", b'{"ShardCount": 2}') == in_use
    assert create(f"{STREAM}-geo", None, headers={}) == in_use  # no body: default shards
    assert create("orders", b'{"ShardCount": 1}') == kinesis_error(
        "InvalidArgumentException",
        "pinpipe accepts only streams that map onto its tables, names ending in -pin, -geo or "
        "-user: records sent to orders would have nowhere to go.",
    )
    for count in ("0", "-3"):
        assert create(f"{STREAM}-pin", b'{"ShardCount": %s}' % count.encode()) == kinesis_error(
            "ValidationException",
            f"1 validation error detected: Value '{count}' at 'shardCount' failed to satisfy "
            "constraint: Member must have value greater than or equal to 1",
        )
    for value, shown in (('"2"', "'2'"), ("true", "True"), ("1.5", "1.5"), ("null", None)):
        answer = create(f"{STREAM}-pin", b'{"ShardCount": %s}' % value.encode())
        if shown is None:  # null is "not given", as in Kinesis
            assert answer[1]["__type"] == "ResourceInUseException"
            continue
        assert answer == kinesis_error(
            "SerializationException", f"shardCount: expected an integer, got {shown}"
        )
    assert create(f"{STREAM}-pin", b'{"ShardCount": 501}') == kinesis_error(
        "LimitExceededException",
        "This request would exceed the shard limit for the account 000000000000 in us-east-1. "
        "Limit: 500. Number of additional shards that would have resulted from this request: 501.",
    )
    assert create("bad name-pin", b"{}") == kinesis_error(
        "ValidationException",
        "1 validation error detected: Value 'bad name-pin' at 'streamName' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+",
    )
    status, body = create(f"{STREAM}-pin", b'{"ShardCount": ')
    assert (status, body["__type"]) == (400, "SerializationException")
    assert body["message"].startswith("Malformed JSON: ")
    assert create(f"{STREAM}-pin", b"[]") == kinesis_error(
        "SerializationException", "The body must be a JSON object."
    )
    assert create(f"{STREAM}-pin", b"ShardCount=2", {"Content-Type": "text/plain"}) == (
        415,
        {
            "__type": "SerializationException",
            "message": "Unsupported media type text/plain; expected one of application/json, "
            "application/x-amz-json-1.1.",
        },
    )
    assert topics_of(kafka_bootstrap, p) == {f"{p}.pin": 2, f"{p}.geo": 2, f"{p}.user": 2,
                                             f"{p}.dlq": 2}  # fmt: skip


def test_delete_stream_is_refused_without_the_admin_setting(api, kafka_bootstrap):
    p = api.prefix
    response = requests.delete(f"{api.url}/streams/{STREAM}-user", timeout=30)
    assert error(response) == kinesis_error(
        "AccessDeniedException",
        f"pinpipe does not delete stream {STREAM}-user: it is the pipeline's user stream, and "
        f"deleting its topic {p}.user would delete every user record in it. An administrator "
        "can allow it with ingest.kinesis_allow_delete = true "
        "(PINPIPE_INGEST__KINESIS_ALLOW_DELETE).",
    )
    assert topics_of(kafka_bootstrap, p)[f"{p}.user"] == 2
    assert error(api.client.delete("/streams/orders")) == kinesis_error(
        "ResourceNotFoundException", "Stream orders under account 000000000000 not found."
    )
    assert error(api.client.delete("/streams/bad name"))[1]["__type"] == "ValidationException"


def test_delete_and_create_with_the_admin_setting(api_factory, kafka_bootstrap):
    api = api_factory(kinesis_allow_delete=True)
    p, url = api.prefix, api.url
    response = requests.delete(f"{url}/streams/{p}-user", headers=AMZ_JSON, timeout=30)
    assert (response.status_code, response.content) == (200, b"{}")
    assert topics_of(kafka_bootstrap, p) == {f"{p}.pin": 2, f"{p}.geo": 2, f"{p}.dlq": 2}
    assert api.client.get("/streams").json()["StreamNames"] == [f"{p}-geo", f"{p}-pin"]
    gone = kinesis_error(
        "ResourceNotFoundException", f"Stream {STREAM}-user under account 000000000000 not found."
    )
    assert error(api.client.get(f"/streams/{STREAM}-user")) == gone
    assert error(api.client.delete(f"/streams/{STREAM}-user")) == gone

    # CreateStream makes the topic again, with the shards asked for.
    body = orjson.dumps({"StreamName": f"{STREAM}-user", "ShardCount": 3})
    response = requests.post(f"{url}/streams/{STREAM}-user", data=body, headers=AMZ_JSON)
    assert (response.status_code, response.content) == (200, b"{}")
    assert topics_of(kafka_bootstrap, p)[f"{p}.user"] == 3
    shards = api.client.get(f"/streams/{STREAM}-user").json()["StreamDescription"]["Shards"]
    assert [(shard["ShardId"], shard["HashKeyRange"]) for shard in shards] == [
        ("shardId-000000000000", {"StartingHashKey": "0",
                                  "EndingHashKey": "113427455640312821154458202477256070484"}),
        ("shardId-000000000001", {"StartingHashKey": "113427455640312821154458202477256070485",
                                  "EndingHashKey": "226854911280625642308916404954512140969"}),
        ("shardId-000000000002", {"StartingHashKey": "226854911280625642308916404954512140970",
                                  "EndingHashKey": "340282366920938463463374607431768211455"}),
    ]  # fmt: skip
    response = api.client.post(f"/streams/{STREAM}-user", json={"ShardCount": 3})
    assert error(response)[1]["__type"] == "ResourceInUseException"


def test_every_management_route_needs_the_key(api_factory):
    api = api_factory(api_key_hashes=[hash_api_key(KEY)])
    routes = (("GET", "/streams"), ("POST", f"/streams/{STREAM}-pin"),
              ("GET", f"/streams/{STREAM}-pin"), ("DELETE", f"/streams/{STREAM}-pin"))  # fmt: skip
    for method, path in routes:
        response = api.client.request(method, path, json={"ShardCount": 1})
        assert (response.status_code, response.json()) == (
            401,
            {"error_code": 40101, "message": "Missing API key (X-API-Key or Authorization: Bearer)."},
        ), (method, path)
        response = api.client.request(method, path, headers={"X-API-Key": "wrong"})
        assert (response.status_code, response.json()["message"]) == (401, "Invalid API key.")
    with_key = {"X-API-Key": KEY}
    assert api.client.get("/streams", headers=with_key).status_code == 200
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert api.client.get(f"/streams/{STREAM}-pin", headers=bearer).status_code == 200
    response = api.client.post(f"/streams/{STREAM}-pin", json={"ShardCount": 1}, headers=with_key)
    assert error(response)[1]["__type"] == "ResourceInUseException"
    response = api.client.delete(f"/streams/{STREAM}-pin", headers=with_key)
    assert error(response)[1]["__type"] == "AccessDeniedException"


@pytest.fixture
def own_broker():
    """A broker of this test's own, to hang and to stop."""
    log_dir = Path(tempfile.mkdtemp(prefix="pinpipe-kinesis-"))
    broker = EmbeddedBroker(log_dir)
    broker.start()
    yield broker
    if broker.pid is not None:
        os.kill(broker.pid, signal.SIGCONT)
    broker.stop()
    shutil.rmtree(log_dir, ignore_errors=True)


def test_a_broker_that_does_not_answer_gets_503_with_retry_after(own_broker):
    settings = make_settings(own_broker.bootstrap_servers, admin_timeout_s=1.0, retry_after_s=1)
    p = settings.broker.topic_prefix
    unavailable = (503, {"__type": "ServiceUnavailable",
                         "message": "Kafka broker unavailable; retry later."})  # fmt: skip
    calls = (("GET", "/streams"), ("GET", f"/streams/{p}-pin"),
             ("POST", f"/streams/{p}-pin"), ("DELETE", f"/streams/{p}-pin"))  # fmt: skip

    def check_unavailable() -> None:
        for method, path in calls:
            started = time.monotonic()
            response = api.client.request(method, path)
            assert error(response) == unavailable, (method, path)
            assert response.headers["retry-after"] == "1"
            assert time.monotonic() - started < 4.0, (method, path)

    with running_api(settings) as api:
        assert api.client.get("/streams").status_code == 200
        os.kill(own_broker.pid, signal.SIGSTOP)  # hangs: connections open, no answers
        check_unavailable()
        # A request that is wrong whatever the broker does still gets its 400 at once.
        response = api.client.post("/streams/orders")
        assert error(response)[1]["__type"] == "InvalidArgumentException"
        os.kill(own_broker.pid, signal.SIGCONT)
        deadline = time.monotonic() + 15
        while api.client.get("/streams").status_code != 200:
            assert time.monotonic() < deadline, "no recovery within 15 s"
            time.sleep(0.2)
        own_broker.stop(timeout=0.5)  # gone (SIGKILL after 0.5 s): connections refused
        check_unavailable()
