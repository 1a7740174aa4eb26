"""The stream job (``pinpipe stream``): Kafka -> the shared cleaning -> PostgreSQL, exactly once.

One Structured Streaming query reads the three table topics with one source, and parses and
cleans each record with its table's rules from the batch job into one DataFrame holding every
row output (clean rows of the three tables, unparseable records; :func:`stream_outputs`).
Each micro-batch of it is one Spark job without a shuffle, collected once as Arrow and written by
:class:`~pinpipe.speed.writer.PostgresWriter` in one transaction that also records the batch
id and adds the real-time metric counts (in SQL, :mod:`pinpipe.speed.metrics`), then appended
to the lake's Delta tables by :class:`~pinpipe.speed.delta.DeltaWriter` (``speed.delta_output``;
why in that order: :mod:`pinpipe.speed.delta`). The Kafka offsets live in the Spark checkpoint;
a crash replays the last batch with the same offsets and id, which both writers recognise.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pinpipe.config import Settings
from pinpipe.events import Table, topic_name

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

    from pinpipe.speed.prom import StreamMetrics

log = logging.getLogger(__name__)

OUTPUT = "_output"
DEAD_LETTER = "dead_letter"
QUERY_NAME = "pinpipe_speed"


def table_topics(settings: Settings) -> dict[Table, str]:
    """The topic of each table: ``<prefix>.pin|.geo|.user``."""
    return {table: topic_name(settings.broker.topic_prefix, table) for table in Table}


def checkpoint_location(settings: Settings, checkpoint_dir: str | Path | None = None) -> str:
    return str(checkpoint_dir or settings.speed.checkpoint_dir or settings.data_dir / "checkpoints" / "speed")


def journal_dir(checkpoint: str) -> str | None:
    """Where the source keeps its journal (:mod:`pinpipe.speed.journal`): inside a local
    checkpoint (None for a remote one: the job keeps no journal, and exports no loss figures)."""
    from pinpipe.speed.journal import DIRECTORY

    local = checkpoint.removeprefix("file://").removeprefix("file:")
    return None if "://" in local else str(Path(local) / DIRECTORY)


def read_kafka(
    spark: SparkSession, settings: Settings, bootstrap: str, topics: Iterable[str], journal: str | None = None
) -> DataFrame:
    """The streaming DataFrame of ``topics`` (one source), from the configured source format.

    ``pinpipe-kafka`` (built in) or Spark's ``kafka`` connector; both give ``key``, ``value``
    (text), ``value_bytes``, ``topic``, ``partition``, ``offset``, ``timestamp``. ``journal``:
    the directory pinpipe-kafka reports log restarts and broker outages to (:func:`journal_dir`).
    """
    from pyspark.sql import functions as F

    from pinpipe.speed.source import FORMAT, register

    speed = settings.speed
    builtin = speed.source_format == FORMAT
    # pinpipe-kafka reads with librdkafka, Spark's connector with the Java client: the same
    # connection in each one's property names.
    client = settings.broker.client_config if builtin else settings.broker.java_client_config
    options = {
        **{f"kafka.{k}": v for k, v in client(bootstrap).items()},
        "subscribe": ",".join(topics),
        "startingOffsets": speed.starting_offsets,
    }
    if speed.max_offsets_per_trigger:
        options["maxOffsetsPerTrigger"] = str(speed.max_offsets_per_trigger)
    if builtin:
        register(spark)
        if speed.read_tasks:
            options["maxPartitions"] = str(speed.read_tasks)
        options["brokerWaitMs"] = str(int(speed.broker_wait_s * 1000))
        if journal is not None:
            options["pinpipe.stateDir"] = journal
        return spark.readStream.format(FORMAT).options(**options).load()
    native = spark.readStream.format(speed.source_format).options(**options).load()
    return native.select(
        F.col("key").cast("string").alias("key"),
        F.col("value").cast("string").alias("value"),
        F.lit(None).cast("binary").alias("value_bytes"),
        "topic",
        "partition",
        "offset",
        "timestamp",
        "timestampType",
    )


def tag_outputs(raw: DataFrame, topics: dict[Table, str]) -> DataFrame:
    """Records of the table ``topics``, parsed and cleaned in one pass, each row tagged by ``_output``.

    ``_output`` is the table name for a clean row (the columns of :mod:`pinpipe.cleaning`, with
    the arrival columns; another table's columns are null) and ``dead_letter`` for a record that
    could not be parsed (``value`` and ``reason`` set; its clean columns mean nothing). Each
    record is parsed as its topic's table and cleaned by that table's rules (``CASE`` on the
    topic), so the source is read once, with no branch, union or shuffle.
    """
    from pyspark.sql import functions as F

    from pinpipe.cleaning import (
        ARRIVAL_COLUMNS,
        REASON,
        arrival_columns,
        clean_columns,
        json_record,
        rejection_reason,
    )

    of_table = {table: F.col("topic") == topic for table, topic in topics.items()}
    record = {table: f"_{table.value}_record" for table in topics}
    text = F.col("value").cast("string")
    # The records first, by name: the rules below read them many times (see json_record).
    decoded = raw.select(
        text.alias("value"),
        "value_bytes",
        "topic",
        *arrival_columns(),
        *(F.when(of_table[table], json_record(text, table)).alias(record[table]) for table in topics),
    )
    reason = _by_table(
        {t: rejection_reason(F.col("value"), F.col(record[t]), t, F.col("value_bytes")) for t in topics},
        of_table,
    )
    output = _by_table({t: F.lit(t.value) for t in topics}, of_table)
    rules: dict[str, dict[Table, Any]] = {}
    for table in topics:
        field = lambda name, table=table: F.col(record[table])[name]  # noqa: E731
        for name, rule in clean_columns(table, field).items():
            # A column several tables have (ind) takes each record's own table's rule.
            rules.setdefault(name, {})[table] = rule
    rejected = F.col(REASON).isNotNull()
    return decoded.select("*", reason.alias(REASON)).select(
        *(_by_table(of_rule, of_table).alias(name) for name, of_rule in rules.items()),
        *ARRIVAL_COLUMNS,
        REASON,
        F.when(rejected, F.col("value")).alias("value"),  # only dead letters need it
        "topic",
        F.when(rejected, F.lit(DEAD_LETTER)).otherwise(output).alias(OUTPUT),
    )


def _by_table(values: dict[Table, Any], of_table: dict[Table, Any]) -> Any:
    """``CASE WHEN <record of table 1> THEN <its value> WHEN ... END`` (null for other tables)."""
    from pyspark.sql import functions as F

    case = None
    for table, value in values.items():
        case = F.when(of_table[table], value) if case is None else case.when(of_table[table], value)
    return case


def stream_outputs(
    spark: SparkSession, settings: Settings, bootstrap: str, journal: str | None = None
) -> DataFrame:
    """The streaming DataFrame of every row output: one source of the three table topics.

    One source rather than one per topic: each costs the micro-batch its own offset probe,
    task and calls between Spark and the Python source (measured: 290-340 ms against 480-580
    ms a trigger of 900 records, idle machine, three sources against one).
    """
    topics = table_topics(settings)
    return tag_outputs(read_kafka(spark, settings, bootstrap, topics.values(), journal), topics)


def split_outputs(collected: Any) -> dict[str, Any]:
    """The Arrow table of :func:`stream_outputs` split by ``_output`` (tag -> Arrow table)."""
    import pyarrow.compute as pc

    outputs = {}
    for tag in pc.unique(collected[OUTPUT]).to_pylist():
        outputs[tag] = collected.filter(pc.equal(collected[OUTPUT], tag))
    return outputs


class MicroBatchHandler:
    """The ``foreachBatch`` function: collect the outputs once, write them in one transaction,
    then append them to the Delta tables (when ``speed.delta_output``)."""

    def __init__(
        self, settings: Settings, dsn: str, checkpoint: str, metrics: StreamMetrics | None = None
    ) -> None:
        from pinpipe.speed.writer import PostgresWriter

        self.settings = settings
        self.metrics = metrics
        self.topics = table_topics(settings)
        self.checkpoint = checkpoint
        speed = settings.speed
        self.writer = PostgresWriter(
            dsn,
            lateness_s=speed.lateness_s,
            poster_window_s=speed.poster_window_s,
            poster_slide_s=speed.poster_slide_s,
            wait_s=speed.postgres_wait_s,
        )
        self.delta = None
        if speed.delta_output:
            from pinpipe.speed.delta import DeltaWriter

            self.delta = DeltaWriter.from_settings(settings)
        self._query_id: str | None = None
        self.query: StreamingQuery | None = None  # set by start_stream, for progress in the log

    def query_id(self) -> str:
        """The query's id, kept in the checkpoint: the same across restarts, new for a new one."""
        if self._query_id is None:
            metadata = Path(self.checkpoint.removeprefix("file:")) / "metadata"
            self._query_id = json.loads(metadata.read_text())["id"]
        return self._query_id

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        began = time.monotonic()
        if self._written(batch_id):
            # The job died after the batch's commits and before Spark's: reading the batch again
            # only to find it written cost the restarted job 10 s (soak, 2 cores).
            if self.metrics is not None:
                self.metrics.progressed()
            log.info("batch %d: replayed (already written), not read again (%.2f s)", batch_id,
                     time.monotonic() - began)  # fmt: skip
            return
        collected = batch.toArrow()
        collected_at = time.monotonic()
        outputs = split_outputs(collected)
        empty = collected.slice(0, 0)
        clean = {table: outputs.get(table.value, empty) for table in Table}
        outcome = self.writer.write(self.query_id(), batch_id, clean, outputs.get(DEAD_LETTER), self.topics)
        done = time.monotonic()
        if self.metrics is not None:
            self.metrics.progressed()
        if self.metrics is not None and not outcome.replayed:
            from pinpipe.cleaning import BROKER_TIMESTAMP

            # (the lag follows from the query's progress: run_stream's loop keeps it current)
            self.metrics.committed(outputs, collected[BROKER_TIMESTAMP])
        # After PostgreSQL, the serving store: a crash between the two is safe (either replay
        # skips the side that has the batch), and PostgreSQL's latency does not include Delta's.
        delta = self.delta.write(self.query_id(), batch_id, clean) if self.delta is not None else None
        phases = self._trigger_phases()
        log.info(
            "batch %d (spark %.2f s, postgres %.2f s%s, handler %.2f s%s): %s%s, %d dead letters, "
            "%d late metric rows dropped",
            batch_id,
            collected_at - began,
            done - collected_at,
            f", {delta.describe()}" if delta is not None else "",
            time.monotonic() - began,
            phases,
            "replayed (already written)" if outcome.replayed else "upserted ",
            "" if outcome.replayed else ", ".join(f"{k} {v}" for k, v in outcome.upserted.items()),
            outcome.dead_letters,
            outcome.late_dropped,
        )

    def _written(self, batch_id: int) -> bool:
        """Batch ``batch_id`` is in PostgreSQL and (when written) in every Delta table."""
        query_id = self.query_id()
        return self.writer.has_batch(query_id, batch_id) and (
            self.delta is None or self.delta.has_batch(query_id, batch_id))

    def update_lag(self) -> None:
        """Consumer lag, the query's state and the source's journal, when metrics are kept."""
        if self.metrics is not None and self.query is not None:
            try:
                self.metrics.query_active.set(1 if self.query.isActive else 0)
                self.metrics.progress(self.query.lastProgress)
                from pinpipe.speed.journal import SourceJournal

                journal = journal_dir(self.checkpoint)
                if journal is not None:
                    self.metrics.follow(SourceJournal(journal))
            except Exception:  # metrics must never stop the stream
                log.debug("stream metrics not updated", exc_info=True)

    def _trigger_phases(self) -> str:
        """The previous trigger's phases outside foreachBatch (offset probe, checkpoint writes)."""
        progress = self.query.lastProgress if self.query is not None else None
        if not progress:
            return ""
        durations = progress.get("durationMs", {}) if isinstance(progress, dict) else progress.durationMs
        return "; previous trigger " + ", ".join(
            f"{name} {ms / 1000:.2f} s" for name, ms in durations.items() if ms
        )

    def close(self) -> None:
        self.writer.close()
        if self.delta is not None:
            self.delta.close()


def start_stream(
    spark: SparkSession,
    settings: Settings,
    bootstrap: str,
    dsn: str,
    *,
    trigger_s: float | None = None,
    checkpoint_dir: str | Path | None = None,
    metrics: StreamMetrics | None = None,
) -> tuple[StreamingQuery, MicroBatchHandler]:
    """Migrate the schema and start the query; the caller stops the query and closes the handler."""
    from pinpipe.speed.checkpoint import committed_offsets
    from pinpipe.store.schema import apply_migrations

    apply_migrations(dsn)
    checkpoint = checkpoint_location(settings, checkpoint_dir)
    if committed_offsets(checkpoint) is not None:
        # A query that resumes (a restart after a crash) has records waiting: it starts on them
        # at once. Its first batches run slower while the JIT compiles (a backlog of 40 s at 600
        # records/s: about 1 s more), against a warm-up that took 47-66 s under the soak's load.
        log.info("resuming the checkpoint's query: no warm-up")
    elif settings.speed.warmup_rows:
        began = time.monotonic()
        from pinpipe.speed.warmup import warm_up

        warm_up(spark, settings, rows=settings.speed.warmup_rows)
        log.info("warmed up on generated records in %.2f s", time.monotonic() - began)
    handler = MicroBatchHandler(settings, dsn, checkpoint, metrics)
    interval = settings.speed.trigger_s if trigger_s is None else trigger_s
    query = (
        stream_outputs(spark, settings, bootstrap, journal_dir(checkpoint))
        .writeStream.queryName(QUERY_NAME)
        .foreachBatch(handler)
        .option("checkpointLocation", checkpoint)
        .trigger(processingTime=f"{interval} seconds")
        .start()
    )
    handler.query = query
    log.info("query started")
    return query, handler


def run_stream(
    settings: Settings,
    bootstrap: str,
    dsn: str,
    *,
    trigger_s: float | None = None,
    stop_event: threading.Event | None = None,
    checkpoint_dir: str | Path | None = None,
    started: threading.Event | None = None,
    metrics_port: int | None = None,
) -> None:
    """Run the stream job until ``stop_event`` is set (or forever); raise if the query fails.

    ``trigger_s`` None: ``speed.trigger_s`` (as in :func:`start_stream`, which resolves it).

    ``started`` is set once the query runs (Spark is up and the schema migrated).
    ``metrics_port``: serve Prometheus ``/metrics`` on ``127.0.0.1:<port>``
    (:mod:`pinpipe.speed.prom`), from before Spark starts: its health gauges then tell a job
    still starting from one whose query runs (:func:`pinpipe.speed.health.stream_health`).

    ``bootstrap`` and ``dsn`` come from :func:`pinpipe.services.resolve.kafka_bootstrap` and
    :func:`~pinpipe.services.resolve.postgres_dsn`. Stopping between batches is clean; a kill
    at any moment is safe too (the next run replays the unfinished batch exactly once).
    """
    from pinpipe.spark.session import get_spark

    metrics = None
    if metrics_port is not None:
        from pinpipe.speed.prom import StreamMetrics

        metrics = StreamMetrics()
        metrics.serve(metrics_port)
    began = time.monotonic()
    spark = get_spark(settings, app_name="pinpipe-stream")
    log.info("spark session up in %.2f s", time.monotonic() - began)
    query, handler = start_stream(
        spark, settings, bootstrap, dsn, trigger_s=trigger_s, checkpoint_dir=checkpoint_dir,
        metrics=metrics,
    )
    if started is not None:
        started.set()
    try:
        while not (stop_event is not None and stop_event.is_set()):
            if query.awaitTermination(0.5):
                break
            handler.update_lag()
        error = query.exception()
        if error is not None:
            raise error
    finally:
        if query.isActive:
            query.stop()
        if metrics is not None:
            metrics.query_active.set(0)
        handler.close()
