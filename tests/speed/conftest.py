"""Fixtures of the speed-layer tests: Spark (shared with the batch tests), a fresh database,
unique topics, and a producer writing records the way the ingest API stores them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pinpipe.config import Settings
from pinpipe.events import Table, record_key, topic_name


@pytest.fixture
def fresh_dsn(pg_dsn: str) -> Iterator[str]:
    """A new empty database on the session's PostgreSQL, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_conninfo(pg_dsn, dbname=name)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def topic_prefix() -> str:
    """Topics of this test only (the broker is shared by the session)."""
    return f"t{uuid.uuid4().hex[:10]}"


def stored_value(record: dict) -> bytes:
    """A record as the ingest API stores it in Kafka: compact JSON, original field names."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.fixture
def produce(kafka_bootstrap: str) -> Iterator[Callable[..., None]]:
    """``produce(prefix, table, records, timestamp_ms=None)``: keyed by natural key, flushed."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5, "acks": "all"})

    def send(prefix: str, table: Table, records: list, timestamp_ms: int | None = None) -> None:
        for record in records:
            value = record if isinstance(record, bytes) else stored_value(record)
            key = record_key(table, record) if isinstance(record, dict) else None
            extra = {"timestamp": timestamp_ms} if timestamp_ms is not None else {}
            producer.produce(topic_name(prefix, table), value=value, key=key, **extra)
        assert producer.flush(30) == 0

    yield send
    producer.flush(10)


TEST_WARMUP_ROWS = 50
"""Tests check what the stream writes, not how fast its first batches are: a short warm-up."""


def speed_settings(prefix: str, *, lake: str | None = None, **speed: object) -> Settings:
    """The stream tests' settings; the Delta output only with a ``lake`` root (its own tests)."""
    return Settings(
        broker={"topic_prefix": prefix, "partitions": 2},
        batch={"spark_master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"},
        lake={"root": lake},
        speed={"trigger_s": 0.5, "warmup_rows": TEST_WARMUP_ROWS, "delta_output": lake is not None, **speed},
    )


def create_topics(bootstrap: str, prefix: str, partitions: int = 2) -> None:
    from pinpipe.services.topics import ensure_topics

    ensure_topics({"bootstrap.servers": bootstrap}, [topic_name(prefix, t) for t in Table], partitions)
