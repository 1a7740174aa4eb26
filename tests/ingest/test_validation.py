"""Invalid records: a per-record error in the reply, the record in the dead-letter topic with
its reason and original bytes, and the rest of the request still accepted."""

from __future__ import annotations

import base64
import re

import orjson
import pytest

from tests.ingest.conftest import consume
from tests.ingest.rows import GEO, GEO_VALUE, PIN, PIN_ID, PIN_VALUE, USER

pytestmark = pytest.mark.integration

REST_PROXY = {"Content-Type": "application/vnd.kafka.json.v2+json"}
RECEIVED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")


def dead_letter(record) -> dict:
    document = orjson.loads(record.value)
    assert RECEIVED_AT.match(document.pop("received_at"))
    return document


def test_mixed_batch_accepts_the_valid_and_dead_letters_the_invalid(api_factory, kafka_bootstrap):
    api = api_factory()
    bad_geo = {**GEO, "ind": "7528", "latitude": 123.0, "timestamp": "yesterday"}
    records = [{"value": GEO}, {"value": bad_geo}, {"value": [1, 2]}, {"nothing": 1}]
    response = api.client.post(
        "/topics/u.geo", content=orjson.dumps({"records": records}), headers=REST_PROXY
    )

    (geo,) = consume(kafka_bootstrap, api.topic("geo"), 1)
    assert geo.value == GEO_VALUE
    assert response.status_code == 200
    assert response.content == (
        b'{"offsets":['
        b'{"partition":%d,"offset":0,"error_code":null,"error":null},'
        b'{"partition":null,"offset":null,"error_code":42202,"error":"ind: Input should be a valid '
        b"integer; timestamp: not a datetime (expected e.g. 2020-08-28T03:52:47); latitude: Input "
        b'should be less than or equal to 90"},'
        b'{"partition":null,"offset":null,"error_code":42202,"error":"record: expected a JSON object, got an array"},'
        b'{"partition":null,"offset":null,"error_code":42202,"error":"record: expected an object with a \'value\' field"}],'
        b'"key_schema_id":null,"value_schema_id":null}' % geo.partition
    )

    dlq = consume(kafka_bootstrap, api.topic("dlq"), 3)
    assert [record.key for record in dlq] == [None, None, None]
    documents = sorted((dead_letter(record) for record in dlq), key=lambda doc: doc["reason"])
    assert documents == [
        {
            "table": "geo",
            "source": "rest-proxy",
            "reason": "ind: Input should be a valid integer; timestamp: not a datetime (expected "
            "e.g. 2020-08-28T03:52:47); latitude: Input should be less than or equal to 90",
            "original": '{"ind":"7528","timestamp":"yesterday","latitude":123.0,"longitude":-173.293,'
            '"country":"Antarctica (the territory South of 60 deg S)"}',
            "original_encoding": "utf-8",
        },
        {
            "table": "geo",
            "source": "rest-proxy",
            "reason": "record: expected a JSON object, got an array",
            "original": "[1,2]",
            "original_encoding": "utf-8",
        },
        {
            "table": "geo",
            "source": "rest-proxy",
            "reason": "record: expected an object with a 'value' field",
            "original": '{"nothing":1}',
            "original_encoding": "utf-8",
        },
    ]
    headers = {record.headers["pinpipe-reason"] for record in dlq}
    assert b"record: expected a JSON object, got an array" in headers
    assert {record.headers["pinpipe-source"] for record in dlq} == {b"rest-proxy"}


def test_placeholders_missing_fields_and_extra_fields_are_valid(api_factory, kafka_bootstrap):
    api = api_factory()
    row = {"ind": 1, "first_name": None, "extra": {"kept": True}}  # no age, no date_joined
    response = api.client.post("/user/", json=row)
    assert response.status_code == 200, response.text
    (record,) = consume(kafka_bootstrap, api.topic("user"), 1)
    assert record.value == b'{"ind":1,"first_name":null,"extra":{"kept":true}}'


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({**PIN, "index": None}, "index: Input should be a valid integer"),
        ({k: v for k, v in PIN.items() if k != "unique_id"}, "unique_id: Field required"),
        ({**PIN, "downloaded": True}, "downloaded: Input should be a valid integer"),
        ({**PIN, "downloaded": 2}, "downloaded: Input should be less than or equal to 1"),
        ({**PIN, "title": 5}, "title: Input should be a valid string"),
    ],
)
def test_single_record_routes_answer_422_for_an_invalid_row(api, kafka_bootstrap, row, reason):
    response = api.client.post("/pin/", json=row)
    assert response.status_code == 422
    assert response.json() == {
        "error_code": 42202,
        "message": f"Invalid record, kept in the dead-letter topic: {reason}",
    }


def test_follower_count_as_a_number_is_stored_as_text(api_factory, kafka_bootstrap):
    api = api_factory()
    assert api.client.post("/pin/", json={**PIN, "follower_count": 437}).status_code == 200
    (record,) = consume(kafka_bootstrap, api.topic("pin"), 1)
    assert b'"follower_count":"437"' in record.value
    assert record.value == PIN_VALUE.replace(
        b'"follower_count":"User Info Error"', b'"follower_count":"437"'
    )


def test_kinesis_undecodable_data_keeps_the_exact_bytes(api_factory, kafka_bootstrap):
    api = api_factory()
    garbage = b"\xff\xfe not json"
    body = {
        "records": [
            {"data": base64.b64encode(garbage).decode(), "partition-key": "a"},
            {"data": USER, "partition-key": "b"},
        ]
    }
    response = api.client.put("/streams/streaming-x-user/records", json=body)
    (user,) = consume(kafka_bootstrap, api.topic("user"), 1)
    assert response.status_code == 200
    assert response.content == (
        b'{"FailedRecordCount":1,"Records":['
        b'{"ErrorCode":"ValidationException","ErrorMessage":"Data: neither a JSON object nor base64-encoded JSON"},'
        b'{"SequenceNumber":"0","ShardId":"shardId-00000000000%d"}]}' % user.partition
    )
    (dlq,) = consume(kafka_bootstrap, api.topic("dlq"), 1)
    assert dead_letter(dlq) == {
        "table": "user",
        "source": "kinesis",
        "reason": "Data: neither a JSON object nor base64-encoded JSON",
        "original": base64.b64encode(garbage).decode(),
        "original_encoding": "base64",
    }


def test_native_unknown_table_and_malformed_line(api_factory, kafka_bootstrap):
    api = api_factory()
    body = (
        b'{"table":"pin","value":' + orjson.dumps(PIN) + b'}\n{"table":"nope","value":{}}\n{oops\n'
    )
    response = api.client.post(
        "/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"}
    )
    (pin,) = consume(kafka_bootstrap, api.topic("pin"), 1)
    assert pin.key == PIN_ID.encode()
    assert response.status_code == 200
    reply = response.json()
    parser_message = reply["results"][2]["error"]  # the JSON parser's own words after the prefix
    assert parser_message.startswith("line 3: malformed JSON: ")
    assert reply == {
        "results": [
            {"table": "pin", "partition": pin.partition, "offset": 0, "error": None},
            {
                "table": None,
                "partition": None,
                "offset": None,
                "error": "table: expected one of pin, geo, user",
            },
            {"table": None, "partition": None, "offset": None, "error": parser_message},
        ],
        "accepted": 1,
        "rejected": 2,
    }
    dlq = consume(kafka_bootstrap, api.topic("dlq"), 2)
    originals = sorted(dead_letter(record)["original"] for record in dlq)
    assert originals == ['{"table":"nope","value":{}}', "{oops"]
