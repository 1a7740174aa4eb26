"""The emulator's requests, checked byte for byte against DATA_SPEC.md section 2 by a real HTTP server."""

from __future__ import annotations

import base64
import json
from datetime import datetime

import pytest

from pinpipe.events import DatetimeStyle, Table
from pinpipe.source.emulator import Emulator, EmulatorPlan
from pinpipe.source.tables import SourceTables
from pinpipe.source.wire import WireFormat, kinesis_request
from tests.source.httpserver import RecordingServer

PIN = {
    "index": 7,
    "unique_id": "5b4b8f4e-0000-4000-8000-000000000007",
    "title": "Вязаный плед ✨",
    "description": "No description available Story format",
    "poster_name": "User Info Error",
    "follower_count": "26k",
    "tag_list": "a,b",
    "is_image_or_video": "image",
    "image_src": "Image src error.",
    "downloaded": 1,
    "save_location": "Local save in /data/travel",
    "category": "travel",
}
GEO = {"ind": 7, "timestamp": datetime(2020, 8, 28, 3, 52, 47), "latitude": -5.5, "longitude": 120.25,
       "country": "Cote d'Ivoire"}
USER = {"ind": 7, "first_name": "Ann", "last_name": "Lee", "age": 33, "date_joined": datetime(2016, 1, 2, 3, 4, 5)}

PIN_JSON = (
    '{"index":7,"unique_id":"5b4b8f4e-0000-4000-8000-000000000007","title":"Вязаный плед ✨",'
    '"description":"No description available Story format","poster_name":"User Info Error",'
    '"follower_count":"26k","tag_list":"a,b","is_image_or_video":"image","image_src":"Image src error.",'
    '"downloaded":1,"save_location":"Local save in /data/travel","category":"travel"}'
)
GEO_ISO = '{"ind":7,"timestamp":"2020-08-28T03:52:47","latitude":-5.5,"longitude":120.25,"country":"Cote d\'Ivoire"}'
USER_ISO = '{"ind":7,"first_name":"Ann","last_name":"Lee","age":33,"date_joined":"2016-01-02T03:04:05"}'


def one_row_tables() -> SourceTables:
    return SourceTables(pin=[PIN], geo=[GEO], user=[USER])


def emulate(server: RecordingServer, wire_format: WireFormat, style=DatetimeStyle.ISO, **plan) -> dict:
    plan = EmulatorPlan(base_url=server.base_url, wire_format=wire_format, user_id="12a3b4c5d6e7",
                        datetime_style=style, rate=1000, count=plan.pop("count", 1), concurrency=1, **plan)
    return Emulator(one_row_tables(), plan).run().as_dict()


@pytest.fixture
def server():
    with RecordingServer() as running:
        yield running


def test_rest_proxy_bodies(server):
    stats = emulate(server, WireFormat.REST_PROXY)
    assert [(r.method, r.path) for r in server.received] == [
        ("POST", "/topics/12a3b4c5d6e7.pin"),
        ("POST", "/topics/12a3b4c5d6e7.geo"),
        ("POST", "/topics/12a3b4c5d6e7.user"),
    ]
    assert {r.headers["content-type"] for r in server.received} == {"application/vnd.kafka.json.v2+json"}
    bodies = [r.body for r in server.received]
    assert bodies == [
        ('{"records":[{"value":' + PIN_JSON + "}]}").encode(),
        ('{"records":[{"value":' + GEO_ISO + "}]}").encode(),
        ('{"records":[{"value":' + USER_ISO + "}]}").encode(),
    ]
    assert stats["sent"] == 3 and stats["accepted"] == 3 and stats["requests"] == 3


def test_kinesis_bodies(server):
    emulate(server, WireFormat.KINESIS)
    assert [(r.method, r.path) for r in server.received] == [
        ("PUT", "/streams/streaming-12a3b4c5d6e7-pin/record"),
        ("PUT", "/streams/streaming-12a3b4c5d6e7-geo/record"),
        ("PUT", "/streams/streaming-12a3b4c5d6e7-user/record"),
    ]
    assert server.received[1].headers["content-type"] == "application/json"
    assert server.received[1].body == (
        '{"StreamName":"streaming-12a3b4c5d6e7-geo","Data":' + GEO_ISO + ',"PartitionKey":"partition-geo"}'
    ).encode()


def test_kinesis_base64_data():
    request = kinesis_request(Table.USER, USER, "u1", DatetimeStyle.ISO, base64_data=True)
    body = json.loads(request.body)
    assert body["StreamName"] == "streaming-u1-user"
    assert base64.b64decode(body["Data"]) == USER_ISO.encode()


def test_legacy_bodies_with_space_datetimes(server):
    emulate(server, WireFormat.LEGACY, style=DatetimeStyle.SPACE)
    assert [(r.method, r.path) for r in server.received] == [("POST", "/pin/"), ("POST", "/geo/"), ("POST", "/user/")]
    assert server.received[0].body == PIN_JSON.encode()
    assert server.received[1].body == GEO_ISO.replace("2020-08-28T03:52:47", "2020-08-28 03:52:47").encode()
    assert server.received[2].body == USER_ISO.replace("2016-01-02T03:04:05", "2016-01-02 03:04:05").encode()


def test_native_batch_with_zoned_datetimes(server):
    stats = emulate(server, WireFormat.NATIVE, style=DatetimeStyle.ZONED, count=2, batch_size=2)
    assert [(r.method, r.path) for r in server.received] == [("POST", "/v1/events")]
    geo = GEO_ISO.replace("2020-08-28T03:52:47", "2020-08-28T03:52:47.000000+00:00")
    user = USER_ISO.replace("2016-01-02T03:04:05", "2016-01-02T03:04:05.000000+00:00")
    one_post = f'{{"table":"pin","value":{PIN_JSON}}},{{"table":"geo","value":{geo}}},{{"table":"user","value":{user}}}'
    assert server.received[0].body == f"[{one_post},{one_post}]".encode()
    assert stats["posts"] == 2 and stats["sent"] == 6 and stats["requests"] == 1
