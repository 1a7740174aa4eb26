"""``speed.source_format = "kafka"``: the stream job on Spark's own kafka connector.

The connector (spark-sql-kafka and the Kafka Java client) is not in the pyspark wheel and
cannot be downloaded here, so a stand-in plays it: a Python data source with the connector's
columns (key and value as bytes) whose one record's value is the options it was given. Spark
reserves the name ``kafka`` for its connector, so the stand-in has its own name, which
``source_format`` names: the job treats every format but ``pinpipe-kafka`` as the connector. It checks the two things pinpipe controls: the options
are the Java client's, and the DataFrame the job builds has the built-in source's columns.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition

from pinpipe.config import Settings
from pinpipe.speed.job import read_kafka
from pinpipe.speed.source import KAFKA_SCHEMA

pytestmark = pytest.mark.integration

STAND_IN = "kafka-stand-in"
CONNECTOR_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
    "timestampType int"
)
"""The columns of Spark's kafka source (Structured Streaming + Kafka integration guide)."""


class StandInKafkaSource(DataSource):
    """Stands in for Spark's kafka connector (a JVM library that cannot be installed here)."""

    @classmethod
    def name(cls) -> str:
        return STAND_IN

    def schema(self) -> str:
        return CONNECTOR_SCHEMA

    def streamReader(self, schema):
        return _OptionsEcho(dict(self.options))


class _OptionsEcho(DataSourceStreamReader):
    """One record at offset 0 whose value is the source's options as JSON."""

    def __init__(self, options: dict[str, str]) -> None:
        self.options = options

    def initialOffset(self) -> dict:
        return {"offset": 0}

    def latestOffset(self) -> dict:
        return {"offset": 1}

    def partitions(self, start: dict, end: dict):
        return [InputPartition(start["offset"])] if end["offset"] > start["offset"] else []

    def read(self, partition):
        value = json.dumps(self.options, sort_keys=True).encode()
        yield (b"k", value, "t.pin", 0, 0, datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), 0)

    def commit(self, end: dict) -> None:
        pass


def columns(frame) -> list[tuple[str, str]]:
    return [(field.name, field.dataType.simpleString()) for field in frame.schema]


def test_native_format_gets_java_client_options_and_gives_the_same_columns(spark, traversable_dir):
    spark.dataSource.register(StandInKafkaSource)
    settings = Settings(
        broker={
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "pinpipe",
            "sasl_password": 'pa"ss',
            "ssl_ca_location": "/etc/ssl/ca.pem",
            "client_options": {"linger.ms": "5"},  # librdkafka's: not for the Java client
        },
        speed={"source_format": STAND_IN, "max_offsets_per_trigger": 500, "read_tasks": 1},
    )
    native = read_kafka(spark, settings, "b-1.example:9096", ["t.pin"])
    builtin = read_kafka(spark, Settings(), "127.0.0.1:9", ["t.pin"])
    assert columns(native) == columns(builtin) == columns(spark.createDataFrame([], KAFKA_SCHEMA))

    rows = []
    query = (
        native.writeStream.foreachBatch(lambda df, _: rows.extend(df.collect()))
        .option("checkpointLocation", str(traversable_dir / "ckpt"))
        .start()
    )
    try:
        deadline = time.monotonic() + 120
        while not rows:
            assert query.exception() is None, query.exception()
            assert time.monotonic() < deadline, "no batch from the stand-in source"
            time.sleep(0.2)
    finally:
        query.stop()

    (row,) = rows
    assert (row.key, row.topic, row.partition, row.offset, row.value_bytes) == ("k", "t.pin", 0, 0, None)
    # Spark passes the option names in lower case to Python data sources.
    assert json.loads(row.value) == {
        "kafka.bootstrap.servers": "b-1.example:9096",
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
        "kafka.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="pinpipe" password="pa\\"ss";',
        "kafka.ssl.truststore.type": "PEM",
        "kafka.ssl.truststore.location": "/etc/ssl/ca.pem",
        "subscribe": "t.pin",
        "startingoffsets": "earliest",
        "maxoffsetspertrigger": "500",
    }
