"""Reading planned offset ranges on the executors: :meth:`KafkaStreamReader.read`'s work.

One Spark task reads its ranges ``[start, end)`` with one assign-only consumer (reused by the
next task of the same Python worker) and yields Arrow record batches of
:data:`~pinpipe.speed.source.KAFKA_SCHEMA`.

Records of a range are yielded only between two answers of the broker naming the cluster the
batch was planned on (one before the first fetch, one before each yield, from an admin client
apart from the reading consumer): a broker restarted in between would serve another log's
records at the same offsets. When records stop coming, the reader also asks (every few
seconds), to tell three cases apart:

- the broker does not answer (paused, down, unreachable): the task **waits**, logging every
  30 s, for up to ``brokerWaitMs`` (``speed.broker_wait_s``; 0: for good); that time does not
  count toward the poll timeout;
- the broker answers with another cluster id than the one the batch was planned on: the log
  restarted empty and the planned records are gone. The task gives up the rest of its ranges
  (WARNING and a ``range_lost`` journal event, :mod:`pinpipe.speed.journal`) and returns what
  it read, so the batch commits and the next one starts from the new log's beginning;
- the broker answers as before: records are missing from a live log; after
  ``kafkaConsumer.pollTimeoutMs`` without records the task fails, as it always did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyspark.sql.datasource import InputPartition

from pinpipe.errors import TerminalError
from pinpipe.speed.journal import LostRange, SourceJournal, describe, ensure_log_handler

log = logging.getLogger(__name__)

_BATCH_ROWS = 10_000
_CHECK_AFTER_S = 2.0  # no records for this long: ask the broker what is going on
_WAIT_LOG_EVERY_S = 30.0


class KafkaSourceError(TerminalError):
    """Reading a planned offset range failed for good: records missing, or the broker gone for
    longer than the source waits (its transient trouble is waited out before this is raised)."""


@dataclass(frozen=True)
class KafkaPartitionRange:
    """One Kafka partition's ``[start, end)`` within a micro-batch."""

    topic: str
    partition: int
    start: int
    end: int


@dataclass(frozen=True)
class KafkaInputPartition(InputPartition):
    """The ranges one Spark task reads, with one consumer fetching them all at once.

    ``cluster``: the cluster id of the log the ranges were planned on (None: not known).
    """

    ranges: tuple[KafkaPartitionRange, ...]
    cluster: str | None = None


class RangeReader:
    """Reads the ranges of a :class:`KafkaInputPartition` (see the module docstring)."""

    def __init__(
        self,
        client_config: dict[str, str],
        *,
        poll_timeout_s: float,
        fail_on_data_loss: bool,
        broker_wait_s: float,
        journal_dir: str | None,
    ) -> None:
        self.client_config = client_config
        self.poll_timeout_s = poll_timeout_s
        self.fail_on_data_loss = fail_on_data_loss
        self.broker_wait_s = broker_wait_s
        self.journal = SourceJournal(journal_dir) if journal_dir else None

    def read(self, partition: KafkaInputPartition) -> Iterator[Any]:
        """Exactly the records ``[start, end)`` of each range, as Arrow record batches.

        With the planned log's cluster id known, records are yielded only between two answers
        of the broker naming that cluster (one before the first fetch, one before each yield):
        a broker that restarted in between would have served records of another log at the
        same offsets.
        """
        from confluent_kafka import TopicPartition

        ensure_log_handler()
        if not partition.ranges:
            yield _to_arrow([])  # the warm-up task's empty batch warms the Arrow path too
            return
        positions = {(r.topic, r.partition): r.start for r in partition.ranges}
        ends = {(r.topic, r.partition): r.end for r in partition.ranges}
        confirmed = dict(positions)  # per range, the records before it were yielded
        if not self._confirm(partition, confirmed, ends):
            return
        consumer = _reader_consumer(self.client_config)
        finished = False
        try:
            consumer.assign([TopicPartition(r.topic, r.partition, r.start) for r in partition.ranges])
            rows: list[Any] = []
            last_progress = next_check = time.monotonic()
            waiting = _Waiting(self.broker_wait_s)
            while positions:
                wanted = min(sum(ends[key] - at for key, at in positions.items()), _BATCH_ROWS)
                messages = consumer.consume(wanted, timeout=0.2)
                gone = False
                for message in messages:
                    try:
                        taken = self._take(message, positions, ends, partition)
                    except KafkaSourceError:
                        state = _broker_state(self.client_config, partition)
                        if state == "same":
                            raise
                        gone = state == "gone"
                        if gone:
                            break
                        continue  # a broker going away: the wait below covers it
                    if taken:
                        rows.append(message)
                if gone:
                    self._give_up(partition, confirmed, ends)
                    rows = []
                    break
                now = time.monotonic()
                if messages:
                    last_progress = now
                    waiting.over()
                if len(rows) >= _BATCH_ROWS or (rows and not positions):
                    if not self._confirm(partition, confirmed, ends):
                        rows = []
                        break
                    yield _to_arrow(rows)
                    rows = []
                    confirmed = {key: positions.get(key, ends[key]) for key in ends}
                if not positions or now - last_progress < _CHECK_AFTER_S or now < next_check:
                    continue
                next_check = now + _CHECK_AFTER_S
                state = _broker_state(self.client_config, partition)
                if state == "gone":
                    self._give_up(partition, confirmed, ends)
                    break
                if state == "unreachable":
                    last_progress = now  # waiting for the broker is not waiting for records
                    waiting.still(f"to read {_waiting(positions, ends)}")
                elif now - last_progress > self.poll_timeout_s:
                    raise KafkaSourceError(
                        f"no records for {self.poll_timeout_s:.0f} s from {_waiting(positions, ends)}"
                    )
            finished = True
        finally:
            _release_reader_consumer(self.client_config, consumer, reusable=finished)

    def _confirm(self, partition: KafkaInputPartition, confirmed: dict, ends: dict) -> bool:
        """Whether the broker still serves the planned log (waiting while it does not answer);
        if not, the ranges from ``confirmed`` on are reported lost."""
        if partition.cluster is None:
            return True
        waiting = _Waiting(self.broker_wait_s)
        while True:
            state = _broker_state(self.client_config, partition)
            if state == "same":
                waiting.over()
                return True
            if state == "gone":
                self._give_up(partition, confirmed, ends)
                return False
            waiting.still(f"to read {_waiting(confirmed, ends)}")
            time.sleep(_CHECK_AFTER_S)

    def _give_up(self, partition: KafkaInputPartition, confirmed: dict, ends: dict) -> None:
        """The log the ranges were planned on restarted: what was not yielded of them is lost."""
        lost = [LostRange(t, p, at, ends[(t, p)]) for (t, p), at in sorted(confirmed.items()) if at < ends[(t, p)]]
        log.warning(
            "log restarted while reading (cluster %s is gone): records lost for the speed layer: %s",
            partition.cluster, describe(lost),
        )
        if self.journal is not None:
            self.journal.append_event("range_lost", lost, old_cluster=partition.cluster)

    def _take(self, message: Any, positions: dict, ends: dict, partition: Any) -> bool:
        """Whether ``message`` is the next record of a range; drop ranges that reached their end.

        ``positions`` holds each unfinished range's next offset and loses a range once it is
        complete. Raises :class:`KafkaSourceError` for an error, and for the end of a log short
        of the planned end on another cluster (a restarted log answers a fetch beyond its end
        with an end-of-partition event at the fetch offset).
        """
        from confluent_kafka import KafkaError

        key = (message.topic(), message.partition())
        if key not in positions:
            return False  # finished already, or left over from the consumer's previous assignment
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                if message.offset() >= positions[key]:
                    if positions[key] < ends[key] and _broker_state(self.client_config, partition) == "gone":
                        raise KafkaSourceError(f"{key[0]}[{key[1]}] ends at {message.offset()}: the log is gone")
                    # The planned end was at or below the high watermark, so the end of the
                    # log is the end of the range (a transaction marker can take the last
                    # offsets).
                    del positions[key]
                return False
            if error.code() == KafkaError._AUTO_OFFSET_RESET and not self.fail_on_data_loss:
                return False
            raise KafkaSourceError(f"reading {key[0]}[{key[1]}] at {positions[key]}: {error}")
        offset = message.offset()
        if offset < positions[key]:
            return False
        if offset >= ends[key]:
            del positions[key]
            return False
        positions[key] = offset + 1
        if positions[key] >= ends[key]:
            del positions[key]
        return True


def _waiting(positions: dict, ends: dict) -> str:
    return ", ".join(
        f"{topic}[{part}] at {at} (planned up to {ends[(topic, part)]})"
        for (topic, part), at in sorted(positions.items())
        if at < ends[(topic, part)]
    )


class _Waiting:
    """A wait for an unreachable broker: logged every 30 s, failing after ``bound_s`` (0: never)."""

    def __init__(self, bound_s: float) -> None:
        self.bound_s = bound_s
        self.since: float | None = None
        self.logged = 0.0

    def still(self, what: str) -> None:
        now = time.monotonic()
        self.since = self.since or now
        waited = now - self.since
        if self.bound_s and waited > self.bound_s:
            raise KafkaSourceError(
                f"the broker did not answer for {waited:.0f} s (speed.broker_wait_s = {self.bound_s:.0f}), "
                f"waiting {what}"
            )
        if now - self.logged >= _WAIT_LOG_EVERY_S:
            self.logged = now
            log.warning("broker unreachable for %.0f s; waiting %s", waited, what)

    def over(self) -> None:
        if self.since is not None and self.logged:
            log.warning("the broker answers again after %.0f s", time.monotonic() - self.since)
        self.since = None


_ADMINS: dict[tuple, Any] = {}
"""An admin client per client configuration, for the cluster id checks of this Python worker
(apart from the reading consumer: metadata requests on a fetching consumer can stall its fetches)."""


def _broker_state(client_config: dict[str, str], partition: KafkaInputPartition) -> str:
    """``unreachable``, ``gone`` (another cluster id: the planned log is no more) or ``same``."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    key = tuple(sorted(client_config.items()))
    admin = _ADMINS.get(key)
    if admin is None:
        admin = _ADMINS[key] = AdminClient({**client_config, "log_level": 2})
    try:
        cluster = admin.list_topics(timeout=2).cluster_id
    except KafkaException:
        return "unreachable"
    if partition.cluster is not None and cluster is not None and cluster != partition.cluster:
        return "gone"
    return "same"


_READER_CONSUMERS: dict[tuple, Any] = {}
"""Idle reading consumers of this (reused) Python worker, by client configuration."""


def _reader_consumer(client_config: dict[str, str]) -> Any:
    """An assign-only consumer for :meth:`KafkaStreamReader.read`, reused across tasks.

    Spark reuses its Python workers, so keeping the consumer spares every task a new
    connection and metadata round trip (measured: most of a small micro-batch's read time).
    """
    from confluent_kafka import Consumer

    cached = _READER_CONSUMERS.pop(tuple(sorted(client_config.items())), None)
    if cached is not None:
        return cached
    return Consumer(
        {
            **client_config,
            "group.id": "pinpipe-speed-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "error",
            "fetch.wait.max.ms": 50,
            "queued.max.messages.kbytes": 16 * 1024,
            "log_level": 2,  # not every reconnect of an outage (the reader logs it)
        }
    )


def _release_reader_consumer(client_config: dict[str, str], consumer: Any, *, reusable: bool) -> None:
    """Keep a consumer that finished its range cleanly for the next task; close any other."""
    key = tuple(sorted(client_config.items()))
    try:
        consumer.unassign()
    except Exception:  # noqa: BLE001 - a consumer in doubt is closed, never reused
        reusable = False
    if reusable and key not in _READER_CONSUMERS:
        _READER_CONSUMERS[key] = consumer
    else:
        consumer.close()


def _to_arrow(messages: list[Any]) -> Any:
    """Kafka messages -> one Arrow record batch of :data:`KAFKA_SCHEMA`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pa.array([m.value() for m in messages], pa.binary())
    try:
        text = pc.cast(values, pa.string())
        raw = pa.nulls(len(messages), pa.binary())
    except pa.ArrowInvalid:  # some value is not UTF-8: keep those as bytes only
        decoded = []
        for value in values.to_pylist():
            try:
                decoded.append(None if value is None else value.decode())
            except UnicodeDecodeError:
                decoded.append(None)
        text = pa.array(decoded, pa.string())
        raw = pa.array(
            [v if d is None and v is not None else None for v, d in zip(values.to_pylist(), decoded)],
            pa.binary(),
        )
    keys = pa.array(
        [None if m.key() is None else m.key().decode(errors="replace") for m in messages], pa.string()
    )
    stamps = [m.timestamp() for m in messages]
    return pa.RecordBatch.from_arrays(
        [
            keys,
            text,
            raw,
            pa.array([m.topic() for m in messages], pa.string()),
            pa.array([m.partition() for m in messages], pa.int32()),
            pa.array([m.offset() for m in messages], pa.int64()),
            pa.array([ms * 1000 if kind else None for kind, ms in stamps], pa.timestamp("us", tz="UTC")),
            pa.array([kind for kind, _ in stamps], pa.int32()),
        ],
        names=["key", "value", "value_bytes", "topic", "partition", "offset", "timestamp", "timestampType"],
    )


