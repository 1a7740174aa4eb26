"""Fixtures of the ingest API tests: a real uvicorn server in a thread, a real consumer.

The broker is the session's embedded Tansu (``kafka_bootstrap`` from tests/conftest.py);
every API gets its own topic prefix, so tests never see each other's records.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from pinpipe.config import Settings
from pinpipe.events import topic_name
from pinpipe.ingest import create_app

SERVER_START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(app: Any, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread; yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn exited during startup")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"uvicorn did not start within {SERVER_START_TIMEOUT} s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def make_settings(bootstrap: str, **ingest: Any) -> Settings:
    """Settings for one test API: its own topic prefix, the given ingest settings."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return Settings(
        broker={"bootstrap_servers": bootstrap, "topic_prefix": prefix, "partitions": 2},
        ingest=ingest,
    )


@dataclass
class Api:
    """A running API: its base URL, its settings, and a client."""

    url: str
    settings: Settings
    client: httpx.Client

    @property
    def prefix(self) -> str:
        return self.settings.broker.topic_prefix

    def topic(self, suffix: str) -> str:
        return topic_name(self.prefix, suffix)


@contextmanager
def running_api(settings: Settings, port: int | None = None) -> Iterator[Api]:
    with (
        running_server(create_app(settings), port) as url,
        httpx.Client(base_url=url, timeout=30.0) as client,
    ):
        yield Api(url, settings, client)


@pytest.fixture(scope="module")
def api(kafka_bootstrap: str) -> Iterator[Api]:
    """One API with default limits and no authentication, for a test module."""
    with running_api(make_settings(kafka_bootstrap)) as running:
        yield running


@pytest.fixture
def api_factory(kafka_bootstrap: str) -> Iterator[Callable[..., Api]]:
    """Start an API with particular ingest settings; stopped after the test."""
    stack: list[Any] = []

    def start(**ingest: Any) -> Api:
        context = running_api(make_settings(kafka_bootstrap, **ingest))
        stack.append(context)
        return context.__enter__()

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def consume(
    bootstrap: str, topic: str, count: int, timeout: float = 20.0, settle: float = 0.5
) -> list[Record]:
    """Read ``topic`` from the beginning until ``count`` records arrived (fail at the
    deadline), then ``settle`` seconds more to catch any extra; sorted by (partition, offset).
    ``assign``, not a consumer group: Tansu joins groups slowly."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "session.timeout.ms": 2000,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        settled_at: float | None = None
        while time.monotonic() < (settled_at or deadline):
            if settled_at is None and len(records) >= count:
                settled_at = time.monotonic() + settle
            message = consumer.poll(0.1)
            if message is None or message.error():
                continue
            records.append(
                Record(
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    message.key(),
                    message.value(),
                    dict(message.headers() or []),
                )
            )
        assert len(records) >= count, (
            f"{topic}: {len(records)} records within {timeout} s, expected {count}"
        )
        return sorted(records, key=lambda record: (record.partition, record.offset))
    finally:
        consumer.close()
