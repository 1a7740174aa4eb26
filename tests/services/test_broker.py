import os
import socket
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from pinpipe.processes import pid_is_alive
from pinpipe.services.broker import (
    BrokerStartError,
    EmbeddedBroker,
    broker_binary,
    broker_is_healthy,
    free_port,
)
from pinpipe.services.topics import describe_topics, ensure_topics

pytestmark = pytest.mark.integration


def _consume(bootstrap: str, topic: str, partitions: list[int], expected: int) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, partition, 0) for partition in partitions])
    records = []
    deadline = time.monotonic() + 15
    try:
        while len(records) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            assert message.error() is None, message.error()
            records.append(message)
    finally:
        consumer.close()
    return records


def test_broker_binary_is_executable():
    binary = broker_binary()

    assert binary.is_file() and os.access(binary, os.X_OK)


def test_start_stop_leaves_no_process(traversable_dir):
    broker = EmbeddedBroker(traversable_dir)
    with broker:
        pid = broker.pid
        assert pid is not None and pid_is_alive(pid)
        assert broker.bootstrap_servers.startswith("127.0.0.1:")
        assert broker_is_healthy({"bootstrap.servers": broker.bootstrap_servers})
        assert (traversable_dir / "broker.log").is_file()

    assert not pid_is_alive(pid)
    broker.stop()  # idempotent


def test_unreachable_broker_is_not_healthy():
    assert not broker_is_healthy({"bootstrap.servers": f"127.0.0.1:{free_port()}"}, timeout=1)


def test_produce_and_consume_exact_values(kafka_bootstrap):
    topic = f"test.produce.{uuid.uuid4().hex[:8]}"
    ensure_topics({"bootstrap.servers": kafka_bootstrap}, [topic], partitions=2)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "acks": "all", "enable.idempotence": True}
    )
    delivered = []
    values = [f"value-{i}".encode() for i in range(5)]
    for i, value in enumerate(values):
        producer.produce(
            topic, value=value, key=f"k{i}".encode(), partition=i % 2,
            on_delivery=lambda err, msg: delivered.append((err, msg.partition(), msg.offset())),
        )  # fmt: skip
    assert producer.flush(10) == 0

    assert [err for err, _, _ in delivered] == [None] * 5
    records = _consume(kafka_bootstrap, topic, [0, 1], expected=5)
    by_partition = {
        p: [(m.offset(), m.key(), m.value()) for m in records if m.partition() == p] for p in (0, 1)
    }
    assert by_partition == {
        0: [(0, b"k0", b"value-0"), (1, b"k2", b"value-2"), (2, b"k4", b"value-4")],
        1: [(0, b"k1", b"value-1"), (1, b"k3", b"value-3")],
    }


def test_ensure_topics_is_idempotent(kafka_bootstrap):
    config = {"bootstrap.servers": kafka_bootstrap}
    prefix = f"test.ensure.{uuid.uuid4().hex[:8]}"
    topics = [f"{prefix}.pin", f"{prefix}.geo"]

    first = ensure_topics(config, topics, partitions=3)
    second = ensure_topics(config, topics, partitions=3)

    assert first == {f"{prefix}.pin": "created", f"{prefix}.geo": "created"}
    assert second == {f"{prefix}.pin": "exists", f"{prefix}.geo": "exists"}
    described = describe_topics(config)
    assert {topic: described[topic] for topic in topics} == {topic: 3 for topic in topics}


def test_topic_already_exists_from_the_broker_is_not_an_error(kafka_bootstrap, monkeypatch):
    from pinpipe.services import topics as topics_module

    config = {"bootstrap.servers": kafka_bootstrap}
    topic = f"test.race.{uuid.uuid4().hex[:8]}"
    ensure_topics(config, [topic], partitions=1)
    # Simulate losing the race: the listing did not see the topic, the create says it exists.
    monkeypatch.setattr(topics_module, "describe_topics", lambda *a, **k: {})

    assert topics_module.ensure_topics(config, [topic], partitions=1) == {topic: "exists"}


@pytest.fixture
def taken_port():
    """A loopback port bound (not listening) by this test, so a broker cannot bind it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_taken_explicit_port_is_a_clear_error(traversable_dir, taken_port):
    broker = EmbeddedBroker(traversable_dir, port=taken_port)

    with pytest.raises(BrokerStartError, match="(?s)exited.*Address in use"):
        broker.start(timeout=10)
    assert broker.pid is None and not broker.is_running()


def test_automatic_port_is_retried_once_when_taken(traversable_dir, taken_port, monkeypatch):
    from pinpipe.services import broker as broker_module

    ports = iter([taken_port, free_port()])
    monkeypatch.setattr(broker_module, "free_port", lambda: next(ports))

    with EmbeddedBroker(traversable_dir) as broker:
        assert broker.bootstrap_servers != f"127.0.0.1:{taken_port}"
        assert broker_is_healthy({"bootstrap.servers": broker.bootstrap_servers})


def test_detached_broker_runs_in_its_own_session(traversable_dir):
    broker = EmbeddedBroker(traversable_dir)
    broker.start(detach=True)
    try:
        assert os.getsid(broker.pid) == broker.pid != os.getsid(0)
    finally:
        pid = broker.pid
        broker.stop()
    assert not pid_is_alive(pid)
