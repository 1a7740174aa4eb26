"""``pinpipe lake ls`` and ``pinpipe lake verify``: what the raw layer holds, and is it whole.

``ls`` reads only Parquet footers (record counts). ``verify`` reads the ``offset`` column of
every raw file and checks, per topic-partition of each of the broker's logs
(:mod:`pinpipe.lake.logs`), that the offsets form one contiguous range without duplicates;
that everything the sink's group committed in the current log is in the lake; and, for a log
that ended, that everything acknowledged in it (as its sinks and API workers last knew it) is.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pinpipe.config import Settings
from pinpipe.events import all_topics
from pinpipe.lake.layout import RAW_DIR, RawFile, parse_file_name
from pinpipe.lake.logs import LogLedger, current_generation, sink_group
from pinpipe.lake.storage import LakeStorage


@dataclass(frozen=True)
class PartitionInfo:
    """One ``raw/<table>/dt=<day>`` partition of the lake."""

    table: str
    dt: str
    files: int
    records: int
    bytes: int


def _raw_files(storage: LakeStorage) -> list[tuple[RawFile, str, int]]:
    found = []
    for stored in storage.list_files(RAW_DIR):
        parsed = parse_file_name(stored.path)
        if parsed is not None:
            found.append((parsed, stored.path, stored.size))
    return found


def list_partitions(settings: Settings) -> list[PartitionInfo]:
    """Every raw partition with its file count, record count (from footers) and size."""
    storage = LakeStorage.from_settings(settings)
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for parsed, path, size in _raw_files(storage):
        entry = totals[(parsed.table, parsed.dt)]
        entry[0] += 1
        entry[1] += storage.read_metadata(path).num_rows
        entry[2] += size
    return [PartitionInfo(table, dt, *entry) for (table, dt), entry in sorted(totals.items())]


@dataclass
class PartitionCheck:
    """The verdict for one topic-partition; ``problems`` is empty when it is whole."""

    topic: str
    partition: int
    generation: int = 0  # which log of the broker (pinpipe.lake.logs)
    records: int = 0
    first_offset: int | None = None
    last_offset: int | None = None
    duplicates: int = 0
    gaps: int = 0
    committed: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class VerifyReport:
    checks: list[PartitionCheck]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def lake_offsets(storage: LakeStorage) -> dict[tuple[str, int, int], pa.Array]:
    """Every offset present in the lake, per (topic, partition, log generation), duplicates kept."""
    chunks: dict[tuple[str, int, int], list[pa.Array]] = defaultdict(list)
    for parsed, path, _ in _raw_files(storage):
        column = storage.read_columns(path, ["offset"]).column("offset")
        chunks[(parsed.topic, parsed.partition, parsed.generation)].extend(column.chunks)
    return {key: pa.concat_arrays(parts) for key, parts in chunks.items()}


def lake_topics(storage: LakeStorage) -> set[str]:
    """The topics that have raw files in the lake."""
    return {parsed.topic for parsed, _, _ in _raw_files(storage)}


def committed_offsets(settings: Settings, bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """The sink group's committed offsets in the broker's current log (without joining the
    group; the group of log n > 0 is :func:`~pinpipe.lake.logs.sink_group`'s)."""
    from confluent_kafka import Consumer, TopicPartition

    generation = current_generation(LakeStorage.from_settings(settings))
    consumer = Consumer({
        **settings.broker.client_config(bootstrap),
        "group.id": sink_group(settings.lake.sink_group_id, generation),
        "enable.auto.commit": False,
    })  # fmt: skip
    try:
        metadata = consumer.list_topics(timeout=10)
        partitions = [TopicPartition(topic, number)
                      for topic in topics if topic in metadata.topics
                      for number in metadata.topics[topic].partitions]  # fmt: skip
        if not partitions:
            return {}
        result = consumer.committed(partitions, timeout=10)
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): tp.offset for tp in result if tp.offset >= 0}


def verify_lake(settings: Settings, bootstrap: str) -> VerifyReport:
    """Check every topic-partition in the lake or committed by the sink's group."""
    storage = LakeStorage.from_settings(settings)
    ledger = LogLedger(storage)
    logs = ledger.logs()
    current = logs[-1].generation if logs else 0
    ended = {log.generation: ledger.seen(log.cluster_id) for log in logs[:-1]}
    reported = {(r.topic, r.partition, r.generation): r for r in ledger.losses()}
    # The commits before the listing: a running sink writes a file before it commits its end,
    # so every offset committed by now is in the listing that follows (the other order took
    # a commit made after the listing for lost records).
    topics = sorted(set(all_topics(settings.broker.topic_prefix)) | set(lake_topics(storage)))
    committed = {(*key, current): offset
                 for key, offset in committed_offsets(settings, bootstrap, topics).items()}  # fmt: skip
    offsets = lake_offsets(storage)
    acknowledged = {(*key, generation): end for generation, ends in ended.items()
                    for key, end in ends.items()}  # fmt: skip
    checks = []
    for key in sorted(set(offsets) | set(committed) | set(acknowledged)):
        check = PartitionCheck(*key, committed=committed.get(key))
        present = offsets.get(key)
        if present is not None and len(present):
            unique = pc.unique(present)
            bounds = pc.min_max(present)
            check.records = len(present)
            check.first_offset = bounds["min"].as_py()
            check.last_offset = bounds["max"].as_py()
            check.duplicates = len(present) - len(unique)
            check.gaps = check.last_offset - check.first_offset + 1 - len(unique)
            if check.duplicates:
                check.problems.append(f"{check.duplicates} offsets stored more than once")
            if check.gaps:
                check.problems.append(f"{check.gaps} offsets missing inside the range")
        end = check.last_offset + 1 if check.last_offset is not None else 0
        if check.committed is not None and check.committed > end:
            check.problems.append(
                f"committed offset {check.committed} but the lake ends at {end}: records lost"
            )
        if acknowledged.get(key, 0) > end:
            lost = acknowledged[key] - end
            said = "reported" if key in reported else "NOT reported before"
            check.problems.append(
                f"{lost} acknowledged records lost with log {key[2]} (offsets {end}.."
                f"{acknowledged[key] - 1}; {said})"
            )
        checks.append(check)
    return VerifyReport(checks)
