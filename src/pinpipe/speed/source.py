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

A broker that restarted with an empty log
-----------------------------------------
The embedded broker keeps its log in memory: restarted, it starts again at offset 0 and reports
a new cluster id. Every stored offset map carries the cluster id it was taken on (the ``@log``
mark, :mod:`pinpipe.speed.offsets`; a checkpoint written before it reads as "unknown"). When
planning a batch, :meth:`KafkaStreamReader.latestOffset` treats the log as restarted if

- the broker's cluster id differs from the one of the last committed batch (every partition), or
- a fetch answers with a high watermark below the offset the stream had reached (that partition:
  a restarted log whose id did not change, e.g. a checkpoint without the mark).

It then does not fail: the batch it plans reads those partitions from the new log's earliest
offset (kept in the mark's ``from``, so a replay reads the same records). Spark itself has no rule
that an end offset be above the start (it only compares offsets for equality to decide whether
a batch has new data, and hands both to :meth:`~KafkaStreamReader.partitions`); the source never
relies on ``end - start`` across logs: ranges of a restarted partition begin at ``from``. It says
so out loud: a WARNING ``log restarted (...): records lost for the speed layer: t[0] offsets
a-b (n records)`` naming, per partition, what it had not processed of the old log (from the last
committed offset to the old log's end as it last saw it, kept in the journal across restarts of
the job), and a ``log_restart`` event in the journal (:mod:`pinpipe.speed.journal`) from which the
job exports ``pinpipe_stream_log_restarts_total`` and ``pinpipe_stream_records_lost_total``.
Those records were acknowledged to their producers: the speed layer has lost them for good.
A batch planned on the old log and run on the new one (the broker died in between) reads
nothing of it: :meth:`~KafkaStreamReader.partitions` and the reading tasks check the cluster id
(:mod:`pinpipe.speed.reader`) and report the planned range lost (``range_lost``).

A broker that does not answer
-----------------------------
Paused, down, or out of reach: metadata and offset requests time out after
``metadataTimeoutMs`` (5 s) and the trigger plans no batch (it returns the previous end, which
Spark reads as "no new data"), logging a WARNING when it starts and every 30 s; the next trigger
asks again. Reading tasks wait likewise (:mod:`pinpipe.speed.reader`). Only after
``brokerWaitMs`` (``speed.broker_wait_s``, 15 minutes by default; 0: never) does the query
fail and the job exit: restarting the job does not bring a broker back, and costs Spark's start
and warm-up (~20 s) at each attempt, so the job waits out restarts, upgrades and failovers
(minutes) in place; the bound is there so that a job scheduler without health checks (a
``spark-submit`` of the job) still sees an outage of a quarter of an hour as a failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pyspark.sql.datasource import DataSource, DataSourceStreamReader

from pinpipe.speed.journal import LostRange, ensure_log_handler
from pinpipe.speed.offsets import (
    EARLIEST,
    LATEST,
    BrokerUnavailable,
    EndProbe,
    OffsetMap,
    limit_offsets,
    mark_log,
    parse_starting_offsets,
    split_log,
)
from pinpipe.speed.reader import (
    KafkaInputPartition,
    KafkaPartitionRange,
    KafkaSourceError,
    RangeReader,
)
from pinpipe.speed.watch import BrokerWatch

__all__ = ["FORMAT", "KAFKA_SCHEMA", "KafkaDataSource", "KafkaInputPartition", "KafkaPartitionRange",
           "KafkaSourceError", "KafkaStreamReader", "group_ranges", "register"]


FORMAT = "pinpipe-kafka"
KAFKA_SCHEMA = (
    "key string, value string, value_bytes binary, topic string, partition int, offset long, "
    "timestamp timestamp, timestampType int"
)
"""The source's columns (Spark's kafka source columns, key and value decoded)."""



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
        self.metadata_timeout_s = float(options.get("metadatatimeoutms", "5000")) / 1000
        self.broker_wait_s = float(options.get("brokerwaitms", "900000")) / 1000
        self.fail_on_data_loss = options.get("failondataloss", "true").lower() != "false"
        self.journal_dir = options.get("pinpipe.statedir") or None
        self._probe: EndProbe | None = None
        self._known: OffsetMap = {}
        self._watch = BrokerWatch(self.broker_wait_s, self.journal_dir)
        self._planned: dict | None = None  # the last end this reader planned
        self._warmed_up = False  # a task has been planned (see partitions())

    # The probe's consumer stays on the driver; read() runs elsewhere and makes its own.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_probe"] = None
        return state

    def _end_probe(self) -> EndProbe:
        if self._probe is None:
            ensure_log_handler()
            self._probe = EndProbe(
                self.client_config, self.topics, self.probe_timeout_s,
                metadata_timeout_s=self.metadata_timeout_s,
            )  # fmt: skip
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
        """Every current partition at ``startingOffsets``; partitions appearing later at earliest.

        Waits for an unreachable broker (up to ``brokerWaitMs``): a new query has nothing to
        start from without it.
        """
        while True:
            try:
                offsets: OffsetMap = {}
                probe = self._end_probe()
                for topic, partitions in probe.partitions().items():
                    for partition in partitions:
                        if isinstance(self.starting, str):
                            spec = EARLIEST if self.starting == "earliest" else LATEST
                        else:
                            spec = self.starting.get(topic, {}).get(str(partition), EARLIEST)
                        offsets.setdefault(topic, {})[str(partition)] = self._first_offset(topic, partition, spec)
                self._watch.answered()
                return mark_log(offsets, probe.cluster_id)
            except BrokerUnavailable as exc:
                self._watch.unavailable(exc)
                time.sleep(1)

    def getDefaultReadLimit(self) -> Any:
        from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxRows

        return ReadMaxRows(self.max_offsets) if self.max_offsets else ReadAllAvailable()

    def latestOffset(self, start: dict, limit: Any) -> dict:
        """The end of this micro-batch: the probed ends, within the read limit.

        ``start`` itself when there is nothing new, or when the broker does not answer (Spark
        then plans no batch); see the module docstring for a restarted log.
        """
        from pyspark.sql.streaming.datasource import ReadMaxRows

        max_records = limit.max_rows if isinstance(limit, ReadMaxRows) else None
        try:
            planned = self._plan(start, max_records)
        except BrokerUnavailable as exc:
            self._watch.unavailable(exc)
            return start
        self._planned = planned
        return planned

    def _plan(self, start: dict, max_records: int | None) -> dict:
        processed, mark = split_log(start)
        probe = self._end_probe()
        current = probe.partitions()
        cluster = probe.cluster_id
        self._watch.answered()
        old_cluster = mark.get("cluster")
        restarted: set[tuple[str, int]] = set()
        reason = ""
        if old_cluster is not None and cluster is not None and cluster != old_cluster:
            restarted = {(t, int(p)) for t, parts in processed.items() for p in parts}
            reason = f"cluster id {old_cluster} is now {cluster}"
            probe = self._fresh_probe()  # its cached watermarks are the old log's
            self._known = {}
        begin: OffsetMap = {}
        first: OffsetMap = {}  # partitions not starting at the previous end: new or restarted
        for topic, partitions in current.items():
            for part in partitions:
                if str(part) in processed.get(topic, {}) and (topic, part) not in restarted:
                    begin.setdefault(topic, {})[str(part)] = processed[topic][str(part)]
                else:
                    first.setdefault(topic, {})[str(part)] = probe.earliest(topic, part)
                    begin.setdefault(topic, {})[str(part)] = first[topic][str(part)]
        if not restarted:  # partitions the broker did not list this time keep their offsets
            for topic, parts in processed.items():
                for part, offset in parts.items():
                    begin.setdefault(topic, {}).setdefault(part, offset)
        ends = probe.ends(self._probe_from(begin))
        if probe.behind and not restarted:
            restarted = set(probe.behind)
            reason = "the log ends below the offsets read: " + ", ".join(
                f"{t}[{p}] ends at {end}" for (t, p), end in sorted(probe.behind.items())
            )
            again: OffsetMap = {}
            for topic, part in restarted:
                first.setdefault(topic, {})[str(part)] = probe.earliest(topic, part)
                begin[topic][str(part)] = again.setdefault(topic, {})[str(part)] = first[topic][str(part)]
            for topic, parts in probe.ends(again).items():
                ends.setdefault(topic, {}).update(parts)
        if restarted:
            self._watch.log_restarted(processed, restarted, old_cluster, cluster, reason)
        self._known = ends
        end = limit_offsets(begin, ends, max_records)
        idle = not restarted and not first and end == processed
        self._watch.planned(cluster, ends, idle=idle)
        if idle and old_cluster == cluster:
            return start  # nothing new: Spark plans no batch
        kept_first = {t: {p: o for p, o in parts.items() if p in end.get(t, {})} for t, parts in first.items()}
        return mark_log(end, cluster, kept_first)

    def _probe_from(self, begin: OffsetMap) -> OffsetMap:
        """Probe from the furthest known point: the last answer or this batch's start."""
        return {
            topic: {part: max(offset, self._known.get(topic, {}).get(part, offset)) for part, offset in parts.items()}
            for topic, parts in begin.items()
        }

    def _fresh_probe(self) -> EndProbe:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        return self._end_probe()

    def reportLatestOffset(self) -> dict | None:
        return self._known or None

    def partitions(self, start: dict, end: dict) -> list[KafkaInputPartition]:
        """The Kafka partitions with records between ``start`` and ``end``, grouped into tasks.

        One input partition per Kafka partition, or at most ``maxPartitions`` of them
        (:func:`group_ranges`); a partition in the end's ``from`` starts there. A first
        micro-batch without records gets one empty input partition, to warm up. A batch planned
        on a log that is gone since (a replay after the broker restarted) reads nothing.
        """
        first_offsets, start_mark = split_log(start)
        last_offsets, mark = split_log(end)
        first_offsets.update({t: {**first_offsets.get(t, {}), **p} for t, p in mark.get("from", {}).items()})
        cluster = mark.get("cluster")
        ranges = []
        for topic, parts in sorted(last_offsets.items()):
            for part, last in sorted(parts.items(), key=lambda item: int(item[0])):
                first = first_offsets.get(topic, {}).get(part)
                if first is None:  # a map without "from" (an older checkpoint): from its earliest
                    first = self._end_probe().earliest(topic, int(part))
                if last > first:
                    ranges.append(KafkaPartitionRange(topic, int(part), first, last))
        if ranges and cluster is not None and end != self._planned and self._log_is_gone(cluster, ranges):
            ranges = []
        groups = group_ranges(ranges, self.max_partitions)
        if not groups and not self._warmed_up:
            # A query's first tasks start the Python workers that read. Paying for that on an
            # empty task while no records wait keeps it out of the first records' latency (the
            # stream job warms the JVM side before the query: pinpipe.speed.warmup).
            groups = [()]
        self._warmed_up = True
        return [KafkaInputPartition(group, cluster) for group in groups]

    def _log_is_gone(self, cluster: str, ranges: list[KafkaPartitionRange]) -> bool:
        """Whether the broker now has another log than the one ``ranges`` were planned on."""
        try:
            probe = self._end_probe()
            probe.partitions()
        except BrokerUnavailable:
            return False  # the reading tasks wait for it and check again
        if probe.cluster_id is None or probe.cluster_id == cluster:
            return False
        lost = [LostRange(r.topic, r.partition, r.start, r.end) for r in ranges]
        self._watch.planned_range_lost(lost, cluster, probe.cluster_id)
        return True

    def commit(self, end: dict) -> None:
        """Nothing to do: the checkpoint is the source of truth, Kafka keeps no group offsets."""

    def stop(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    # --- reading (executors) -----------------------------------------------------------

    def read(self, partition: KafkaInputPartition) -> Iterator[Any]:
        """Exactly the records ``[start, end)`` of each range, as Arrow record batches."""
        return RangeReader(
            self.client_config,
            poll_timeout_s=self.poll_timeout_s,
            fail_on_data_loss=self.fail_on_data_loss,
            broker_wait_s=self.broker_wait_s,
            journal_dir=self.journal_dir,
        ).read(partition)


def register(spark: Any) -> None:
    """Make ``format("pinpipe-kafka")`` available in ``spark`` (idempotent)."""
    spark.dataSource.register(KafkaDataSource)
