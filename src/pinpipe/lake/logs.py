"""Which of the broker's logs the lake's files came from, and what was lost when one ended.

A broker that keeps its log in memory (the embedded Tansu) starts again, empty, at offset 0
after a restart. Files named by offset alone would then replace the earlier log's files, and
committed offsets (also lost with the broker) could not say what the old log held. So the sink
tells logs apart by the **cluster id** the broker reports (the embedded broker gets a new one per
start; a real Kafka cluster keeps its own) and numbers them: generation 0 is the first log the
lake saw, n the n-th after it. Files of generation n > 0 end in ``+<n>.parquet``
(:mod:`pinpipe.lake.layout`).

The ledger lives in the lake, beside the data it describes (readers skip ``_`` names):

- ``raw/_logs/<cluster id>.json``: the log's generation and when the sink first saw it;
- ``raw/_logs/<cluster id>/seen-<instance>.json``: the partitions' ends in that log as one
  process last knew them: a sink instance's high watermarks (at most every ``SEEN_EVERY_S``),
  an API worker's acknowledged offsets (``seen-api-...``, :func:`ack_recorder`: every few
  seconds and at once when the broker becomes unreachable). So the end of a log is known even
  when no sink ran as it died, and across restarts of the API and the sink;
- ``raw/_logs/<cluster id>/lost-<topic>+<partition>.json``: acknowledged records of that log
  that never reached the lake (offsets ``first`` to ``end`` - 1), written when the log's end is
  found. "At least": records acknowledged after the last end a sink saw are not known.

The sink reads log n > 0 in a consumer group of its own, ``<lake.sink_group_id>.log<n>``
(:func:`sink_group`): the old log's consumer rejoins a broker that comes back within moments,
before the sink knows the log is new, and Tansu keeps such a member as the group's leader
after it has left, so a new consumer in the same group was never assigned a partition
(seen in 1 restart in 2 on a busy machine). A new log holds no committed offsets anyway.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from pinpipe.config import Settings
from pinpipe.lake.errors import StorageError
from pinpipe.lake.layout import RAW_DIR, parse_file_name
from pinpipe.lake.storage import LakeStorage

log = logging.getLogger("pinpipe.lake")

LOGS_DIR = f"{RAW_DIR}/_logs"
SEEN_EVERY_S = 10.0

PartitionKey = tuple[str, int]


@dataclass(frozen=True)
class BrokerLog:
    """One log of the broker, as the lake knows it."""

    cluster_id: str
    generation: int
    first_seen: str


@dataclass(frozen=True)
class LostRange:
    """Acknowledged records of one partition of an ended log that are not in the lake."""

    cluster_id: str
    generation: int
    topic: str
    partition: int
    first: int
    end: int  # exclusive
    found_at: str

    @property
    def records(self) -> int:
        return self.end - self.first

    def describe(self) -> str:
        return f"{self.topic}[{self.partition}] offsets {self.first}..{self.end - 1}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class LogLedger:
    """Read and write the ledger of :mod:`pinpipe.lake.logs` in one lake."""

    def __init__(self, storage: LakeStorage) -> None:
        self.storage = storage

    def _read(self, path: str) -> dict | None:
        try:
            return json.loads(self.storage.read_bytes(path))
        except (FileNotFoundError, ValueError):
            return None

    def _write(self, path: str, document: dict) -> None:
        self.storage.write_atomic(path, json.dumps(document, sort_keys=True).encode())

    def logs(self) -> list[BrokerLog]:
        """Every log the lake has seen, oldest first."""
        found = []
        for stored in self.storage.list_files(LOGS_DIR):
            relative = stored.path[len(LOGS_DIR) + 1 :]
            if "/" in relative or not relative.endswith(".json") or relative.startswith("."):
                continue
            document = self._read(stored.path)
            if document is not None:
                found.append(BrokerLog(**document))
        return sorted(found, key=lambda entry: entry.generation)

    def enter(self, cluster_id: str) -> tuple[BrokerLog, BrokerLog | None]:
        """The log of ``cluster_id``, recorded now if new; with the log it follows if it is new
        (that earlier log has ended), else None. A lake that has files but no ledger yet (written
        before this ledger existed) counts as generation 0 of the first cluster it meets."""
        known = self.logs()
        for entry in known:
            if entry.cluster_id == cluster_id:
                return entry, None
        previous = known[-1] if known else None
        entry = BrokerLog(cluster_id, previous.generation + 1 if previous else 0, _now())
        self._write(f"{LOGS_DIR}/{cluster_id}.json", asdict(entry))
        return entry, previous

    def record_seen(self, cluster_id: str, instance: str, ends: dict[PartitionKey, int]) -> None:
        document = {f"{topic}+{partition}": end for (topic, partition), end in ends.items()}
        self._write(f"{LOGS_DIR}/{cluster_id}/seen-{instance}.json", document)

    def seen(self, cluster_id: str) -> dict[PartitionKey, int]:
        """The highest end any sink instance recorded for each partition of that log."""
        ends: dict[PartitionKey, int] = {}
        for stored in self.storage.list_files(f"{LOGS_DIR}/{cluster_id}"):
            if not stored.path.rsplit("/", 1)[-1].startswith("seen-"):
                continue
            for name, end in (self._read(stored.path) or {}).items():
                topic, _, partition = name.rpartition("+")
                key = (topic, int(partition))
                ends[key] = max(ends.get(key, 0), int(end))
        return ends

    def record_lost(self, lost: LostRange) -> None:
        path = f"{LOGS_DIR}/{lost.cluster_id}/lost-{lost.topic}+{lost.partition}.json"
        self._write(path, asdict(lost))

    def losses(self) -> list[LostRange]:
        """Every lost range recorded, by generation, topic and partition."""
        found = []
        for stored in self.storage.list_files(LOGS_DIR):
            if stored.path.rsplit("/", 1)[-1].startswith("lost-"):
                document = self._read(stored.path)
                if document is not None:
                    found.append(LostRange(**document))
        return sorted(found, key=lambda r: (r.generation, r.topic, r.partition))

    def written_ends(self, generation: int) -> dict[PartitionKey, int]:
        """The offset after the last record in the lake, per partition of one log (footers only)."""
        ends: dict[PartitionKey, int] = {}
        for stored in self.storage.list_files(RAW_DIR):
            parsed = parse_file_name(stored.path)
            if parsed is None or parsed.generation != generation:
                continue
            key = (parsed.topic, parsed.partition)
            if parsed.first_offset >= ends.get(key, 0):
                rows = self.storage.read_metadata(stored.path).num_rows
                ends[key] = max(ends.get(key, 0), parsed.first_offset + rows)
        return ends


def ack_recorder(settings: Settings) -> Callable[[str, dict[PartitionKey, int]], None]:
    """For the ingest API's publisher: record what it got acknowledged, per log, in the lake."""
    ledger = LogLedger(LakeStorage.from_settings(settings))
    instance = f"api-{uuid.uuid4().hex[:12]}"
    return lambda cluster_id, ends: ledger.record_seen(cluster_id, instance, ends)


def sink_group(base: str, generation: int) -> str:
    """The lake sink's consumer group for the log of ``generation`` (see the module)."""
    return base if generation == 0 else f"{base}.log{generation}"


def current_generation(storage: LakeStorage) -> int:
    """The generation of the newest log in the lake's ledger (0 without a ledger)."""
    logs = LogLedger(storage).logs()
    return logs[-1].generation if logs else 0


class LogTracker:
    """The sink's view of the log it reads: its generation, the ends it has seen, and what to
    report when the log turns out to have been replaced by an empty one."""

    def __init__(self, ledger: LogLedger) -> None:
        self.ledger = ledger
        self.instance = uuid.uuid4().hex[:12]
        self.current: BrokerLog | None = None
        self._seen: dict[PartitionKey, int] = {}
        self._seen_saved: dict[PartitionKey, int] = {}
        self._saved_at = 0.0

    @property
    def generation(self) -> int:
        return self.current.generation if self.current else 0

    def enter(self, cluster_id: str, written: dict[PartitionKey, int]) -> list[LostRange]:
        """Start reading the log of ``cluster_id``. If that is a new log, the one before it has
        ended: returns (and records) its acknowledged records not in the lake, comparing the
        ends seen (by this sink or any instance before it) with what is written (``written``:
        this sink's own positions after its last write, else the lake's files)."""
        if self.current is not None and self.current.cluster_id == cluster_id:
            return []
        self.save_seen(force=True)
        entry, ended = self.ledger.enter(cluster_id)
        self.current, self._seen, self._seen_saved, self._saved_at = entry, {}, {}, 0.0
        if ended is None:
            return []
        seen = self.ledger.seen(ended.cluster_id)
        lake = self.ledger.written_ends(ended.generation)
        found_at = _now()
        losses = []
        for key, end in sorted(seen.items()):
            first = max(written.get(key, 0), lake.get(key, 0))
            if end > first:
                lost = LostRange(ended.cluster_id, ended.generation, *key, first, end, found_at)
                self.ledger.record_lost(lost)
                losses.append(lost)
        return losses

    def saw(self, key: PartitionKey, end: int) -> None:
        if end > self._seen.get(key, -1):
            self._seen[key] = end

    def save_seen(self, force: bool = False) -> None:
        """Persist the ends seen (at most every ``SEEN_EVERY_S`` unless ``force``)."""
        now = time.monotonic()
        if self.current is None or self._seen == self._seen_saved:
            return
        if not force and now - self._saved_at < SEEN_EVERY_S:
            return
        try:
            self.ledger.record_seen(self.current.cluster_id, self.instance, self._seen)
        except StorageError as exc:  # a bookkeeping write: the next round tries again
            log.warning("lake sink: recording the log's ends failed: %s", exc)
            return
        self._seen_saved, self._saved_at = dict(self._seen), now
