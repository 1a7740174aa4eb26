"""Offset maps, read limits, and finding partition ends on the embedded (Tansu) broker."""

from __future__ import annotations

import pytest

from pinpipe.speed.offsets import EndProbe, OffsetSpecError, limit_offsets, parse_starting_offsets


def test_starting_offsets_forms():
    assert parse_starting_offsets(None) == "earliest"
    assert parse_starting_offsets(" Latest ") == "latest"
    assert parse_starting_offsets('{"a.pin": {"0": 42, "1": -2}}') == {"a.pin": {"0": 42, "1": -2}}
    with pytest.raises(OffsetSpecError):
        parse_starting_offsets("yesterday")
    with pytest.raises(OffsetSpecError):
        parse_starting_offsets('{"a.pin": 3}')


def test_no_limit_or_small_backlog_reads_everything():
    start, end = {"t": {"0": 0, "1": 5}}, {"t": {"0": 10, "1": 5}}
    assert limit_offsets(start, end, None) == end
    assert limit_offsets(start, end, 10) == end


def test_limit_is_shared_in_proportion_to_backlog():
    start = {"t": {"0": 0, "1": 100}, "u": {"0": 7}}
    end = {"t": {"0": 300, "1": 200}, "u": {"0": 7}}
    # backlogs 300 and 100 share 40 records: 30 and 10
    assert limit_offsets(start, end, 40) == {"t": {"0": 30, "1": 110}, "u": {"0": 7}}


def test_limit_smaller_than_partition_count_still_advances():
    start = {"t": {"0": 0, "1": 0, "2": 0}}
    end = {"t": {"0": 5, "1": 9, "2": 5}}
    limited = limit_offsets(start, end, 1)
    assert limited == {"t": {"0": 0, "1": 1, "2": 0}}


def test_new_partition_counts_from_its_start():
    start = {"t": {"0": 4}}
    end = {"t": {"0": 4, "1": 8}}  # partition 1 appeared at 0... planned with start 0
    assert limit_offsets({"t": {"0": 4, "1": 0}}, end, 3) == {"t": {"0": 4, "1": 3}}
    assert limit_offsets(start, end, 3) == {"t": {"0": 4, "1": 8}}  # unknown start: no backlog


@pytest.mark.integration
def test_probe_finds_the_true_end_where_list_offsets_is_stale(kafka_bootstrap, topic_prefix):
    from confluent_kafka import Consumer, Producer, TopicPartition

    from pinpipe.services.topics import ensure_topics

    topic = f"{topic_prefix}.probe"
    ensure_topics({"bootstrap.servers": kafka_bootstrap}, [topic], 2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 20})
    for _ in range(3):  # several record batches per partition
        for i in range(500):
            producer.produce(topic, value=b"x" * 50, partition=i % 2)
        producer.flush(30)
    for _ in range(7):  # and single-record batches
        producer.produce(topic, value=b"y", partition=0)
        producer.flush(30)

    probe = EndProbe({"bootstrap.servers": kafka_bootstrap}, [topic])
    try:
        assert probe.partitions() == {topic: [0, 1]}
        assert probe.earliest(topic, 0) == 0
        ends = probe.ends({topic: {"0": 0, "1": 0}})
        assert ends == {topic: {"0": 757, "1": 750}}
        # from the last answer (idle partitions answer with end-of-partition)
        assert probe.ends(ends) == ends
        producer.produce(topic, value=b"z", partition=1)
        producer.flush(30)
        assert probe.ends(ends) == {topic: {"0": 757, "1": 751}}
    finally:
        probe.close()

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "stale-check"})
    try:
        _, listed = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()
    # Documents the broker quirk the probe exists for (ARCHITECTURE.md); on Kafka this is 757.
    assert listed <= 757


def test_ranges_grouped_into_balanced_tasks():
    from pinpipe.speed.source import KafkaPartitionRange, group_ranges

    ranges = [KafkaPartitionRange("t", n, 0, size) for n, size in enumerate([50, 10, 30, 20, 40])]
    assert group_ranges(ranges, None) == [(r,) for r in ranges]
    assert group_ranges(ranges, 9) == [(r,) for r in ranges]
    two = group_ranges(ranges, 2)
    # largest first into the lighter group: 50+20+10 = 80 and 40+30 = 70
    assert [sorted(r.partition for r in group) for group in two] == [[0, 1, 3], [2, 4]]
    one = group_ranges(ranges, 1)
    assert len(one) == 1 and sorted(one[0], key=lambda r: r.partition) == ranges


class FirstConsumeEmpty:
    """A real consumer whose first ``consume`` returns nothing, as when the fetch is slow."""

    def __init__(self, consumer) -> None:
        self._consumer, self._calls = consumer, 0

    def consume(self, *args, **kwargs):
        self._calls += 1
        return [] if self._calls == 1 else self._consumer.consume(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._consumer, name)


@pytest.mark.integration
def test_probe_does_not_answer_with_the_previous_probes_high_watermark(kafka_bootstrap, topic_prefix):
    # Under load, the probe's consumer goes on fetching after a partition has answered (it waits
    # for the others), so its cached high watermark runs ahead of the answer. The next probe
    # must fetch afresh rather than take that leftover: taking it answered one probe late.
    from confluent_kafka import Producer, TopicPartition

    from pinpipe.services.topics import ensure_topics

    topic = f"{topic_prefix}.leftover"
    ensure_topics({"bootstrap.servers": kafka_bootstrap}, [topic], 1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})

    def produce(count: int) -> None:
        for _ in range(count):
            producer.produce(topic, b"x", partition=0)
        producer.flush(30)

    produce(100)
    probe = EndProbe({"bootstrap.servers": kafka_bootstrap}, [topic])
    try:
        known = probe.ends({topic: {"0": 0}})
        assert known == {topic: {"0": 100}}
        produce(50)
        # The fetches a busy probe makes after its answer, by hand: the cache now holds 150.
        consumer = probe._client()
        consumer.assign([TopicPartition(topic, 0, 100)])
        while not consumer.consume(1, timeout=1):
            pass
        consumer.unassign()
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), cached=True)[1] == 150
        produce(50)
        # On a loaded machine the fresh fetch is not back within the probe's first slice: the
        # consumer, otherwise real, says so for its first call.
        probe._consumer = FirstConsumeEmpty(consumer)
        assert probe.ends(known) == {topic: {"0": 200}}
    finally:
        probe.close()
