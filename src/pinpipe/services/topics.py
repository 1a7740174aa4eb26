"""Topic management on any Kafka-protocol broker (embedded Tansu or a real cluster)."""

from __future__ import annotations

from pinpipe.config import Settings
from pinpipe.events import all_topics
from pinpipe.services.errors import ServiceError


class TopicError(ServiceError):
    """A topic could not be created, deleted or listed; the message names the topic and the
    broker's error.

    ``transient`` says whether trying again may help (the broker said so, or it timed out).
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message, transient=transient)


def _admin(client_config: dict):
    from confluent_kafka.admin import AdminClient

    return AdminClient(dict(client_config))


def describe_topics(client_config: dict, timeout: float = 5.0) -> dict[str, int]:
    """Every topic the broker reports, with its partition count."""
    from confluent_kafka import KafkaException

    try:
        metadata = _admin(client_config).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TopicError(f"could not list topics: {exc}", transient=True) from exc
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def ensure_topics(
    client_config: dict,
    topics: list[str],
    partitions: int,
    replication_factor: int = 1,
    timeout: float = 15.0,
) -> dict[str, str]:
    """Create the missing ``topics``; returns ``{topic: "created" | "exists"}``. Idempotent.

    An existing topic is left as it is (its partition count is not changed). A topic that
    appears between listing and creating (another process won the race) counts as ``"exists"``.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    existing = describe_topics(client_config, timeout=timeout)
    result = {topic: "exists" for topic in topics if topic in existing}
    missing = [topic for topic in dict.fromkeys(topics) if topic not in existing]
    if not missing:
        return result
    admin = _admin(client_config)  # must outlive the futures: destroying it fails them
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor)
         for topic in missing],
        request_timeout=timeout,
        operation_timeout=timeout,
    )  # fmt: skip
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout)
            result[topic] = "created"
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                result[topic] = "exists"
                continue
            transient = isinstance(error, KafkaError) and error.retriable()
            raise TopicError(f"could not create topic {topic!r}: {exc}", transient) from exc
        except TimeoutError as exc:
            raise TopicError(f"creating topic {topic!r} timed out", transient=True) from exc
    return {topic: result[topic] for topic in topics}


def delete_topics(client_config: dict, topics: list[str], timeout: float = 15.0) -> dict[str, str]:
    """Delete ``topics`` and every record in them; returns ``{topic: "deleted" | "missing"}``.

    A topic the broker does not know (never made, or deleted meanwhile) is ``"missing"``, not an
    error. The embedded Tansu broker supports DeleteTopics (measured: 50 ms); a broker with
    ``delete.topic.enable=false`` refuses, which raises :class:`TopicError`.
    """
    from confluent_kafka import KafkaError, KafkaException

    result: dict[str, str] = {}
    wanted = list(dict.fromkeys(topics))
    if not wanted:
        return result
    admin = _admin(client_config)  # must outlive the futures: destroying it fails them
    futures = admin.delete_topics(wanted, request_timeout=timeout, operation_timeout=timeout)
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout)
            result[topic] = "deleted"
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                result[topic] = "missing"
                continue
            transient = isinstance(error, KafkaError) and error.retriable()
            raise TopicError(f"could not delete topic {topic!r}: {exc}", transient) from exc
        except TimeoutError as exc:
            raise TopicError(f"deleting topic {topic!r} timed out", transient=True) from exc
    return {topic: result[topic] for topic in wanted}


def ensure_pipeline_topics(settings: Settings, bootstrap: str, timeout: float = 15.0) -> dict[str, str]:
    """Create the pipeline's topics if missing, as ``settings.broker`` says (prefix, partitions,
    replication factor); returns what :func:`ensure_topics` returns. Raises :class:`TopicError`."""
    broker = settings.broker
    return ensure_topics(broker.client_config(bootstrap), all_topics(broker.topic_prefix),
                         broker.partitions, broker.replication_factor, timeout=timeout)  # fmt: skip
