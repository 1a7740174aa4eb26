"""A Kafka streaming source for Spark, written with PySpark's Python Data Source API.

The pyspark wheel has no Kafka connector (spark-sql-kafka), so pinpipe brings its own over
confluent-kafka. Register it once per session with :func:`register` and read with::

    spark.readStream.format("pinpipe-kafka")
        .option("kafka.bootstrap.servers", "127.0.0.1:9092")
        .option("subscribe", "pinpipe.pin,pinpipe.geo")
        .option("startingOffsets", "earliest")     # or latest, or {"topic": {"0": 42}}
        .option("maxOffsetsPerTrigger", "100000")  # optional
        .option("maxPartitions", "1")              # optional: at most this many tasks per batch
        .load()

Options follow Spark's kafka source, so a cluster with the connector can switch to
``format("kafka")`` with the same options (:func:`pinpipe.speed.job.read_kafka`); any other
``kafka.<property>`` option is passed to librdkafka as ``<property>``. ``maxPartitions`` is
pinpipe's own: by default each Kafka partition is one Spark task, as in Spark's source; with it,
one task's consumer fetches several partitions at once (:func:`group_ranges`).

Columns (:data:`KAFKA_SCHEMA`): ``key`` and ``value`` as UTF-8 text, ``value_bytes`` (the raw
bytes, set only when the value is not valid UTF-8, so nothing is silently altered), ``topic``,
``partition``, ``offset``, ``timestamp`` (broker or producer time, UTC) and ``timestampType``.

Exactly-once reading: the offsets of every micro-batch (``{topic: {"<partition>": next_offset}}``)
are planned on the driver by :meth:`KafkaStreamReader.latestOffset` and written to Spark's
checkpoint before the batch runs; :meth:`KafkaStreamReader.read` reads exactly ``[start, end)``
of each partition, so a restarted query re-reads a failed batch identically and then goes on
from its end. Nothing is committed to Kafka. End offsets come from
:class:`~pinpipe.speed.offsets.EndProbe` (the broker's ListOffsets answer is stale on Tansu).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition

from pinpipe.speed.offsets import (
    EARLIEST,
    LATEST,
    EndProbe,
    OffsetMap,
    limit_offsets,
    parse_starting_offsets,
)

FORMAT = "pinpipe-kafka"
KAFKA_SCHEMA = (
    "key string, value string, value_bytes binary, topic string, partition int, offset long, "
    "timestamp timestamp, timestampType int"
)
"""The source's columns (Spark's kafka source columns, key and value decoded)."""

_BATCH_ROWS = 10_000


class KafkaSourceError(RuntimeError):
    """Reading a planned offset range failed (records missing or broker unreachable)."""


@dataclass(frozen=True)
class KafkaPartitionRange:
    """One Kafka partition's ``[start, end)`` within a micro-batch."""

    topic: str
    partition: int
    start: int
    end: int


@dataclass(frozen=True)
class KafkaInputPartition(InputPartition):
    """The ranges one Spark task reads, with one consumer fetching them all at once."""

    ranges: tuple[KafkaPartitionRange, ...]


def group_ranges(ranges: list[KafkaPartitionRange], max_groups: int | None) -> list[tuple[KafkaPartitionRange, ...]]:
    """Spread ``ranges`` over at most ``max_groups`` groups of similar record counts.

    ``None``: one group per range (one Spark task per Kafka partition, Spark's kafka source
    behaviour). Fewer groups trade parallelism for per-task cost: one consumer fetches from
    all the partitions of its group concurrently, where one task per partition read them one
    after another on a small machine (measured: 9 partitions of 6,000 records, 0.47 s one by
    one against 0.1 s in one consumer).
    """
    if max_groups is None or max_groups >= len(ranges):
        return [(r,) for r in ranges]
    groups: list[list[KafkaPartitionRange]] = [[] for _ in range(max_groups)]
    sizes = [0] * max_groups
    for r in sorted(ranges, key=lambda r: r.end - r.start, reverse=True):
        smallest = sizes.index(min(sizes))  # largest first into the lightest group
        groups[smallest].append(r)
        sizes[smallest] += r.end - r.start
    return [tuple(group) for group in groups if group]


def _split_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def client_config_from_options(options: dict[str, str]) -> dict[str, str]:
    """librdkafka properties from the ``kafka.*`` options (keys are lower case in Spark)."""
    config = {key[len("kafka."):]: value for key, value in options.items() if key.startswith("kafka.")}
    if "bootstrap.servers" not in config:
        raise ValueError("the pinpipe-kafka source needs the kafka.bootstrap.servers option")
    return config


class KafkaDataSource(DataSource):
    """``format("pinpipe-kafka")``: a streaming source over confluent-kafka."""

    @classmethod
    def name(cls) -> str:
        return FORMAT

    def schema(self) -> str:
        return KAFKA_SCHEMA

    def streamReader(self, schema: Any) -> DataSourceStreamReader:
        return KafkaStreamReader(dict(self.options))


class KafkaStreamReader(DataSourceStreamReader):
    """Plans offset ranges on the driver; reads one partition's range per task."""

    def __init__(self, options: dict[str, str]) -> None:
        # Spark lower-cases option names: compare in lower case only.
        options = {key.lower(): value for key, value in options.items()}
        self.client_config = client_config_from_options(options)
        self.topics = _split_list(options.get("subscribe") or options.get("topics"))
        if not self.topics:
            raise ValueError("the pinpipe-kafka source needs the subscribe option (topics, comma-separated)")
        self.starting = parse_starting_offsets(options.get("startingoffsets"))
        limit = options.get("maxoffsetspertrigger")
        self.max_offsets = int(limit) if limit else None
        tasks = options.get("maxpartitions")
        self.max_partitions = int(tasks) if tasks else None
        if self.max_partitions is not None and self.max_partitions < 1:
            raise ValueError("maxPartitions must be at least 1")
        self.poll_timeout_s = float(options.get("kafkaconsumer.polltimeoutms", "60000")) / 1000
        self.probe_timeout_s = float(options.get("probetimeoutms", "2000")) / 1000
        self.fail_on_data_loss = options.get("failondataloss", "true").lower() != "false"
        self._probe: EndProbe | None = None
        self._known: OffsetMap = {}
        self._warmed_up = False  # a task has been planned (see partitions())

    # The probe's consumer stays on the driver; read() runs elsewhere and makes its own.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_probe"] = None
        return state

    def _end_probe(self) -> EndProbe:
        if self._probe is None:
            self._probe = EndProbe(self.client_config, self.topics, self.probe_timeout_s)
        return self._probe

    # --- planning (driver) -------------------------------------------------------------

    def _first_offset(self, topic: str, partition: int, spec: int) -> int:
        probe = self._end_probe()
        if spec == EARLIEST:
            return probe.earliest(topic, partition)
        if spec == LATEST:
            earliest = probe.earliest(topic, partition)
            return probe.ends({topic: {str(partition): earliest}})[topic][str(partition)]
        return spec

    def initialOffset(self) -> dict:
        """Every current partition at ``startingOffsets``; partitions appearing later at earliest."""
        offsets: OffsetMap = {}
        for topic, partitions in self._end_probe().partitions().items():
            for partition in partitions:
                if isinstance(self.starting, str):
                    spec = EARLIEST if self.starting == "earliest" else LATEST
                else:
                    spec = self.starting.get(topic, {}).get(str(partition), EARLIEST)
                offsets.setdefault(topic, {})[str(partition)] = self._first_offset(topic, partition, spec)
        return offsets

    def _with_new_partitions(self, start: OffsetMap) -> OffsetMap:
        """``start`` plus partitions (and topics) that appeared since, from their earliest."""
        current = {topic: dict(parts) for topic, parts in start.items()}
        probe = self._end_probe()
        for topic, partitions in probe.partitions().items():
            for partition in partitions:
                if str(partition) not in current.get(topic, {}):
                    current.setdefault(topic, {})[str(partition)] = probe.earliest(topic, partition)
        return current

    def getDefaultReadLimit(self) -> Any:
        from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxRows

        return ReadMaxRows(self.max_offsets) if self.max_offsets else ReadAllAvailable()

    def latestOffset(self, start: dict, limit: Any) -> dict:
        """The end of this micro-batch: the probed ends, within the read limit."""
        from pyspark.sql.streaming.datasource import ReadMaxRows

        begin = self._with_new_partitions(start)
        # Probe from the furthest known point: the last answer or this batch's start.
        known = {
            topic: {
                part: max(offset, self._known.get(topic, {}).get(part, offset))
                for part, offset in parts.items()
            }
            for topic, parts in begin.items()
        }
        ends = self._end_probe().ends(known)
        self._known = ends
        max_records = limit.max_rows if isinstance(limit, ReadMaxRows) else None
        return limit_offsets(begin, ends, max_records)

    def reportLatestOffset(self) -> dict | None:
        return self._known or None

    def partitions(self, start: dict, end: dict) -> list[KafkaInputPartition]:
        """The Kafka partitions with records between ``start`` and ``end``, grouped into tasks.

        One input partition per Kafka partition, or at most ``maxPartitions`` of them
        (:func:`group_ranges`). A first micro-batch without records gets one empty input
        partition, to warm up.
        """
        ranges = []
        for topic, parts in sorted(end.items()):
            for part, last in sorted(parts.items(), key=lambda item: int(item[0])):
                first = start.get(topic, {}).get(part)
                if first is None:  # appeared after start was planned: from its earliest
                    first = self._end_probe().earliest(topic, int(part))
                if last > first:
                    ranges.append(KafkaPartitionRange(topic, int(part), first, last))
        groups = group_ranges(ranges, self.max_partitions)
        if not groups and not self._warmed_up:
            # A query's first tasks start the Python workers that read. Paying for that on an
            # empty task while no records wait keeps it out of the first records' latency (the
            # stream job warms the JVM side before the query: pinpipe.speed.job.warm_up).
            groups = [()]
        self._warmed_up = True
        return [KafkaInputPartition(group) for group in groups]

    def commit(self, end: dict) -> None:
        """Nothing to do: the checkpoint is the source of truth, Kafka keeps no group offsets."""

    def stop(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    # --- reading (executors) -----------------------------------------------------------

    def read(self, partition: KafkaInputPartition) -> Iterator[Any]:
        """Exactly the records ``[start, end)`` of each range, as Arrow record batches."""
        from confluent_kafka import TopicPartition

        consumer = _reader_consumer(self.client_config)
        finished = False
        try:
            consumer.assign([TopicPartition(r.topic, r.partition, r.start) for r in partition.ranges])
            positions = {(r.topic, r.partition): r.start for r in partition.ranges}
            ends = {(r.topic, r.partition): r.end for r in partition.ranges}
            rows: list[Any] = []
            last_progress = time.monotonic()
            while positions:
                wanted = min(sum(ends[key] - at for key, at in positions.items()), _BATCH_ROWS)
                messages = consumer.consume(wanted, timeout=0.2)
                for message in messages:
                    if self._take(message, positions, ends):
                        rows.append(message)
                if messages:
                    last_progress = time.monotonic()
                if len(rows) >= _BATCH_ROWS:
                    yield _to_arrow(rows)
                    rows = []
                if positions and time.monotonic() - last_progress > self.poll_timeout_s:
                    waiting = ", ".join(
                        f"{topic}[{part}] at {at} (planned up to {ends[(topic, part)]})"
                        for (topic, part), at in sorted(positions.items())
                    )
                    raise KafkaSourceError(f"no records for {self.poll_timeout_s:.0f} s from {waiting}")
            if rows or not partition.ranges:
                yield _to_arrow(rows)  # the warm-up task's empty batch warms the Arrow path too
            finished = True
        finally:
            _release_reader_consumer(self.client_config, consumer, reusable=finished)

    def _take(self, message: Any, positions: dict, ends: dict) -> bool:
        """Whether ``message`` is the next record of a range; drop ranges that reached their end.

        ``positions`` holds each unfinished range's next offset and loses a range once it is
        complete.
        """
        from confluent_kafka import KafkaError

        key = (message.topic(), message.partition())
        if key not in positions:
            return False  # finished already, or left over from the consumer's previous assignment
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                if message.offset() >= positions[key]:
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
            "log_level": 3,
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


def register(spark: Any) -> None:
    """Make ``format("pinpipe-kafka")`` available in ``spark`` (idempotent)."""
    spark.dataSource.register(KafkaDataSource)
