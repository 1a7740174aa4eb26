"""The stream's one pass over three topics: each record parsed and cleaned as its topic's table."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from pinpipe.events import Table
from pinpipe.speed.job import DEAD_LETTER, OUTPUT, tag_outputs
from pinpipe.speed.source import KAFKA_SCHEMA
from tests.speed.records import geo, pin, user

pytestmark = pytest.mark.integration

TOPICS = {Table.PIN: "t.pin", Table.GEO: "t.geo", Table.USER: "t.user"}
AT = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)


def test_each_record_takes_its_own_topics_rules(spark):
    values = [
        ("t.pin", pin(5, "u-5", ind=9)),  # pins number by "index": a stray "ind" is not theirs
        ("t.pin", geo(7)),  # a geo record sent to the pin topic
        ("t.geo", geo(7)),
        ("t.user", user(3, last="")),
    ]
    raw = spark.createDataFrame(
        [(None, json.dumps(v), None, topic, 0, offset, AT, 0) for offset, (topic, v) in enumerate(values)],
        KAFKA_SCHEMA,
    )
    rows = sorted(tag_outputs(raw, TOPICS).collect(), key=lambda row: row.kafka_offset)

    assert [(row[OUTPUT], row.topic, row.reason) for row in rows] == [
        ("pin", "t.pin", None),
        (DEAD_LETTER, "t.pin", "missing unique_id"),
        ("geo", "t.geo", None),
        ("user", "t.user", None),
    ]
    first, stray, place, person = rows
    assert (first.ind, first.unique_id, first.follower_count, first.save_location) == (5, "u-5", 26_000, "/data/home-decor")
    assert first.value is None and first.country is None  # another table's column stays empty
    assert stray.value == json.dumps(geo(7))  # a dead letter keeps its value
    assert (place.ind, place.country, place.coordinates) == (7, "Cote d'Ivoire", [-5.5, 12.25])
    assert place.timestamp == datetime(2020, 8, 28, 3, 52, 47)  # naive UTC, the session's zone
    assert (person.ind, person.user_name, person.age) == (3, "Ada", 36)  # just the name present
    assert place.broker_timestamp == datetime(2024, 3, 1, 12, 0)
