"""The broker's answers the inspection needs: partitions, start and end offsets, its errors.

End offsets are found by fetching, topics are never named in a metadata request, and no
consumer group is joined or committed (see :mod:`pinpipe.services.inspect`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from pinpipe.services.errors import ServiceError

INSPECT_GROUP = "pinpipe-inspect"

PartitionKey = tuple[str, int]


class InspectError(ServiceError):
    """The broker could not answer what was asked; the message says what and where.

    ``transient`` says whether trying again may help (a timeout, an unreachable broker).
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message, transient=transient)


class UnknownTopicError(InspectError):
    """The topic (or partition) does not exist; it was not created by asking (terminal)."""



def admin_client(client_config: dict):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"log_level": 0, **client_config})


def assign_only_consumer(client_config: dict, **overrides: Any):
    from confluent_kafka import Consumer

    return Consumer(
        {
            "log_level": 0,  # errors reach the caller as exceptions, not as stderr lines
            **client_config,
            "group.id": INSPECT_GROUP,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            **overrides,
        }
    )


def list_partitions(client_config: dict, timeout_s: float = 10.0) -> dict[str, list[int]]:
    """Every topic the broker holds, with its partition numbers (sorted).

    Asks for all topics at once: naming a topic in the request would create it on Tansu.
    Raises :class:`InspectError` (transient) when the broker does not answer.
    """
    return partitions_known_to(admin_client(client_config), client_config, timeout_s)


def partitions_known_to(
    client: Any, client_config: dict, timeout_s: float
) -> dict[str, list[int]]:
    """:func:`list_partitions` asked through ``client`` (an admin client or a consumer).

    Asked of a consumer before it is assigned, the answer also tells it the partitions'
    leaders: without them librdkafka waits 500 ms before it first asks for an offset.
    """
    from confluent_kafka import KafkaException

    try:
        metadata = client.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        where = client_config.get("bootstrap.servers")
        raise InspectError(f"no answer from the broker at {where}: {kafka_reason(exc)}", True) from exc
    return {
        name: sorted(topic.partitions)
        for name, topic in sorted(metadata.topics.items())
        if topic.error is None
    }


def kafka_reason(problem: Any) -> str:
    """The text of a KafkaError, or of the one a KafkaException carries, not their repr."""
    error = problem.args[0] if isinstance(problem, Exception) and problem.args else problem
    return error.str() if hasattr(error, "str") else str(problem)


def partition_ends(
    client_config: dict, partitions: Iterable[PartitionKey], timeout_s: float = 10.0
) -> dict[PartitionKey, int | None]:
    """The end offset (the next offset to be written) of each partition, found by fetching.

    All partitions are assigned at once at the broker's (possibly stale) latest offset; a
    partition's end is its end-of-partition event, or the high watermark of the fetch response
    that brought a record there (that record's offset + 1 at least). A partition that did not
    answer before ``timeout_s`` gets None.
    """
    from confluent_kafka import OFFSET_END, KafkaError, TopicPartition

    wanted = sorted(set(partitions))
    ends: dict[PartitionKey, int | None] = dict.fromkeys(wanted)
    if not wanted:
        return ends
    consumer = assign_only_consumer(
        client_config, **{"fetch.wait.max.ms": 10, "queued.max.messages.kbytes": 4096}
    )
    try:
        partitions_known_to(consumer, client_config, timeout_s)
        consumer.assign([TopicPartition(topic, part, OFFSET_END) for topic, part in wanted])
        pending = set(wanted)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.02):
                key = (message.topic(), message.partition())
                error = message.error()
                if key not in pending:
                    continue
                if error is None:
                    high = consumer.get_watermark_offsets(TopicPartition(*key), cached=True)[1]
                    ends[key] = max(int(high), message.offset() + 1)
                elif error.code() == KafkaError._PARTITION_EOF:
                    ends[key] = int(message.offset())
                else:
                    continue  # librdkafka retries; the deadline bounds the wait
                pending.discard(key)
                consumer.pause([TopicPartition(*key)])
    finally:
        consumer.close()
    return ends


def partition_starts(
    client_config: dict, partitions: Iterable[PartitionKey], timeout_s: float = 10.0
) -> dict[PartitionKey, int]:
    """The first offset each partition holds (ListOffsets EARLIEST, right on Tansu too)."""
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    admin = admin_client(client_config)  # must outlive the futures
    futures = admin.list_offsets(
        {TopicPartition(topic, part): OffsetSpec.earliest() for topic, part in wanted},
        request_timeout=timeout_s,
    )
    starts: dict[PartitionKey, int] = {}
    for tp, future in futures.items():
        try:
            starts[(tp.topic, tp.partition)] = max(int(future.result().offset), 0)
        except KafkaException as exc:
            raise InspectError(
                f"no start offset for {tp.topic}[{tp.partition}]: {kafka_reason(exc)}", transient=True
            ) from exc
    return starts


def first_record_times(
    client_config: dict, partitions: Iterable[PartitionKey], timeout_s: float = 10.0
) -> dict[PartitionKey, int | None]:
    """The timestamp (ms) of the first record each partition holds; None when it holds none.

    ListOffsets for timestamp 0, the first record written at or after 1970. Kafka answers that
    record's own timestamp; Tansu 0.6.0 answers the time the partition was first written to.
    """
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    admin = admin_client(client_config)  # must outlive the futures
    futures = admin.list_offsets(
        {TopicPartition(topic, part): OffsetSpec.for_timestamp(0) for topic, part in wanted},
        request_timeout=timeout_s,
    )
    times: dict[PartitionKey, int | None] = {}
    for tp, future in futures.items():
        try:
            answer = future.result()
        except KafkaException as exc:
            raise InspectError(
                f"no first record time for {tp.topic}[{tp.partition}]: {kafka_reason(exc)}",
                transient=True,
            ) from exc
        times[(tp.topic, tp.partition)] = answer.timestamp if answer.timestamp >= 0 else None
    return times
