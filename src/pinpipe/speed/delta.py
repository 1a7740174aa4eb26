"""The stream's Delta Lake tables: every micro-batch's clean rows appended once, and their upkeep.

``<lake>/stream/pin``, ``.../geo``, ``.../user`` hold every record of the table topics that
parsed and kept its natural key (a blank key is a dead letter, as in PostgreSQL), with its
arrival columns, as the Databricks jobs' ``writeStream.format("delta").outputMode("append")``
wrote them: Spark with Delta, Databricks, delta-rs and DuckDB read them as tables. Written with
delta-rs (:mod:`deltalake`) from the Arrow tables the stream job already collects; no JVM jars.

Exactly once, as Spark's Delta sink does it: each commit carries an application transaction
``(app id = the query id, version = the batch id)``, and a batch whose id is at or below the
table's recorded version for the query (``transaction_version``) is skipped. A commit is atomic
(the log entry appears whole or not at all), so a crash while writing leaves only unreferenced
Parquet files, which vacuum removes once they are older than the retention.

Order: PostgreSQL first, then Delta (:class:`~pinpipe.speed.job.MicroBatchHandler`): the
serving store's latency (broker acknowledgement to PostgreSQL row) then does not include the
append. A crash between the two is safe either way, as each side recognises a batch on its own
by ``(query id, batch id)`` and Spark commits the batch's offsets only after the handler
returns: the replay finds PostgreSQL's ``stream_batch`` row (a no-op there) and no Delta
transaction (appended now); had Delta gone first, it would skip Delta and write PostgreSQL.
A Delta failure fails the batch (and the query), never skipped: Spark would commit offsets
whose rows never reached Delta. The restart replays it.

Partitioned by ``dt``, the UTC date of the broker timestamp (the raw layer's partitions):
readers of "today" or of a day prune every other day's files, and compaction and vacuum of a
stream running for weeks then rewrite the few days that still receive small files.

Upkeep (``speed.delta_*_every_batches``) runs in the handler after a batch's append, every N
batches, each table at its own batch of the interval. Measured with ``bench/bench_delta.py
--upkeep`` (600 batches of 150-6,000 pins, 1.8M rows, the 2-core machine): an append takes
0.018-0.020 s (p95 0.026-0.032 s), as long at batch 600 as at batch 1; a compaction every 100
batches 0.25-0.73 s (pin, the widest table) and a checkpoint 0.03-0.05 s. Left without upkeep,
the same table took 3.5 s to compact (600 files -> 21, then 1.9 s more for 21 -> 4), a reader
0.20 s to open it without a checkpoint against 0.013 s after one, and a full vacuum 0.07 s
(nothing to delete) to 0.28 s (600 files deleted). Not in a thread: appends and a concurrent
compaction did not conflict (200 appends against 10 compactions, delta-rs 1.6), but a thread
competes with Spark for the two cores, and a vacuum with a short retention would delete the
files of a write in flight.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from pinpipe.config import Settings
from pinpipe.events import CLEAN_COLUMNS, Table
from pinpipe.speed.writer import ARRIVAL

BROKER_TIMESTAMP, KAFKA_PARTITION, KAFKA_OFFSET = ARRIVAL

if TYPE_CHECKING:
    from deltalake import DeltaTable

STREAM_DIR = "stream"
PARTITION = "dt"

TARGET_FILE_BYTES = 16 << 20
"""``delta.targetFileSize`` of the tables: compaction leaves files of this size alone.

Compaction bins files by size, and its output is far smaller than its input (300 batch files
of ~3,000 pins, 570 kB each, compact to 15 MB: values repeat across batches), so a compacted
file below the target is rewritten by every compaction until it reaches it. With delta-rs's
100 MB, compacting every 100 batches of 2,000 pins took 0.4 s at first and 2.7 s by 2.4M rows,
still growing (32 MB: the same); with 16 MB, 0.6-1.6 s throughout, 2-4 files a partition.
"""

_UTC = pa.timestamp("us", tz="UTC")
_TYPES: dict[str, pa.DataType] = {
    "ind": pa.int32(),
    "follower_count": pa.int64(),
    "downloaded": pa.int32(),
    "age": pa.int32(),
    # "element", the name Delta (and Spark's Parquet writer) gives a list's items.
    "coordinates": pa.list_(pa.field("element", pa.float64())),
    "timestamp": _UTC,
    "date_joined": _UTC,
    BROKER_TIMESTAMP: _UTC,
    KAFKA_PARTITION: pa.int32(),
    KAFKA_OFFSET: pa.int64(),
}
"""Every column that is not text; the rest of the clean columns are strings (DATA_SPEC.md §3)."""


def table_schema(table: Table) -> pa.Schema:
    """The Arrow schema of a stream table: clean columns, arrival columns, then ``dt``; explicit,
    so that an empty micro-batch or a column null in every row of one never changes a type."""
    names = (*CLEAN_COLUMNS[Table(table)], *ARRIVAL)
    return pa.schema([(name, _TYPES.get(name, pa.string())) for name in names] + [(PARTITION, pa.date32())])


def stream_table_uri(settings: Settings, table: Table) -> str:
    """Where the stream table of ``table`` lives: ``<lake>/stream/<table>`` (local path or s3://)."""
    from pinpipe.lake.storage import lake_root

    root = lake_root(settings)
    if "://" not in root:
        root = str(Path(root).expanduser().resolve())
    return f"{root.rstrip('/')}/{STREAM_DIR}/{Table(table).value}"


def open_stream_table(settings: Settings, table: Table) -> DeltaTable | None:
    """The stream table of ``table`` for reading, or None when the stream has not created it."""
    from deltalake import DeltaTable

    from pinpipe.lake.storage import delta_storage_options

    uri, options = stream_table_uri(settings, table), delta_storage_options(settings)
    if not DeltaTable.is_deltatable(uri, storage_options=options):
        return None
    return DeltaTable(uri, storage_options=options)


def stream_rows(clean: pa.Table, table: Table) -> pa.Table:
    """A micro-batch's clean rows of ``table`` as the stream table stores them.

    Only the table's columns (the job's tables carry every table's), cast to
    :func:`table_schema`, without rows whose natural key is null (dead letters), with ``dt``.
    """
    table = Table(table)
    schema = table_schema(table)
    if not clean.num_rows:
        return schema.empty_table()
    kept = clean.filter(pc.is_valid(clean[table.natural_key]))
    columns = [pc.cast(kept[f.name], f.type) for f in schema if f.name != PARTITION]
    day = pc.cast(columns[schema.get_field_index(BROKER_TIMESTAMP)], pa.date32())  # UTC: the type's zone
    return pa.Table.from_arrays([*columns, day], schema=schema)


@dataclass
class DeltaOutcome:
    """What one :meth:`DeltaWriter.write` (and its upkeep) did."""

    appended: dict[str, int] = field(default_factory=dict)
    replayed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    upkeep: dict[str, float] = field(default_factory=dict)
    """Seconds per upkeep step done after the write (``"compact pin"``, ``"checkpoint geo"``)."""

    def describe(self) -> str:
        """``delta 0.04 s`` plus the replayed tables and the upkeep done, for the batch's log line."""
        text = f"delta {self.seconds:.2f} s"
        if self.replayed:
            text += f" ({', '.join(self.replayed)} replayed)"
        if self.upkeep:
            text += " + " + ", ".join(f"{step} {s:.2f} s" for step, s in self.upkeep.items())
        return text


class DeltaWriter:
    """Appends micro-batches to the three stream tables, exactly once, and keeps them tidy.

    ``compact_every``, ``checkpoint_every``, ``vacuum_every``: batches between upkeep steps of
    a table (0: never); ``vacuum_retention_hours``: how old an unreferenced file must be before
    vacuum deletes it (readers in flight and time travel need them until then).
    """

    def __init__(
        self,
        uris: dict[Table, str],
        *,
        storage_options: dict[str, str] | None = None,
        compact_every: int = 0,
        checkpoint_every: int = 0,
        vacuum_every: int = 0,
        vacuum_retention_hours: int = 24,
    ) -> None:
        self.uris = uris
        self.storage_options = storage_options
        self.compact_every = compact_every
        self.checkpoint_every = checkpoint_every
        self.vacuum_every = vacuum_every
        self.vacuum_retention_hours = vacuum_retention_hours
        self._tables: dict[Table, DeltaTable] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> DeltaWriter:
        """The writer of ``settings``' lake, with the ``speed.delta_*`` upkeep settings."""
        from pinpipe.lake.storage import delta_storage_options

        speed = settings.speed
        return cls(
            {table: stream_table_uri(settings, table) for table in Table},
            storage_options=delta_storage_options(settings),
            compact_every=speed.delta_compact_every_batches,
            checkpoint_every=speed.delta_checkpoint_every_batches,
            vacuum_every=speed.delta_vacuum_every_batches,
            vacuum_retention_hours=speed.delta_vacuum_retention_hours,
        )

    def table(self, table: Table, *, create: bool = True) -> DeltaTable | None:
        """The open stream table; a new one (empty, with its schema and ``dt`` partitions) is
        created, or None returned without ``create``."""
        if table not in self._tables:
            from deltalake import DeltaTable

            uri, options = self.uris[table], self.storage_options
            if DeltaTable.is_deltatable(uri, storage_options=options):
                self._tables[table] = DeltaTable(uri, storage_options=options)
            elif not create:
                return None
            else:
                hours = max(1, self.vacuum_retention_hours)
                self._tables[table] = DeltaTable.create(
                    uri, table_schema(table), mode="ignore", partition_by=[PARTITION],
                    name=f"stream_{table.value}", storage_options=options,
                    # The log is kept as long as the files it names, so time travel within the
                    # retention works; Delta's default of 30 days would keep 2.6M log entries a
                    # table at a commit a second. The vacuum retention alone deletes data files.
                    configuration={"delta.logRetentionDuration": f"interval {hours} hours",
                                   "delta.targetFileSize": str(TARGET_FILE_BYTES)},
                )  # fmt: skip
        return self._tables[table]

    def has_batch(self, query_id: str, batch_id: int) -> bool:
        """Every table's transaction for ``query_id`` is at ``batch_id`` or later (a table that
        had no rows in that batch is not: the caller then reads the batch, to be sure)."""
        for table in Table:
            target = self.table(table, create=False)
            done = target.transaction_version(query_id) if target is not None else None
            if done is None or batch_id > done:
                return False
        return True

    def write(self, query_id: str, batch_id: int, clean: dict[Table, pa.Table]) -> DeltaOutcome:
        """Append each table's rows of batch ``batch_id`` once, then any upkeep that is due.

        A table whose transaction for ``query_id`` is at ``batch_id`` or later already has the
        batch (a replay): it is skipped. A table without rows gets no commit (nothing to
        replay: an idle stream adds no log entries).
        """
        from deltalake import (
            CommitProperties,
            PostCommitHookProperties,
            Transaction,
            write_deltalake,
        )

        began = time.perf_counter()
        outcome = DeltaOutcome()
        for table, arrow in clean.items():
            rows = stream_rows(arrow, table)
            if not rows.num_rows:
                continue
            target = self.table(table)
            done = target.transaction_version(query_id)
            if done is not None and batch_id <= done:
                outcome.replayed.append(table.value)
                continue
            try:
                write_deltalake(
                    target, rows, mode="append",
                    commit_properties=CommitProperties(app_transactions=[Transaction(query_id, batch_id)]),
                    # Checkpoints come from upkeep, on its own schedule.
                    post_commithook_properties=PostCommitHookProperties(
                        create_checkpoint=False, cleanup_expired_logs=False
                    ),
                )  # fmt: skip
            except Exception:
                self._tables.pop(table, None)  # reloaded from storage for the retry
                raise
            outcome.appended[table.value] = rows.num_rows
        outcome.seconds = time.perf_counter() - began
        outcome.upkeep = self.upkeep(batch_id)
        return outcome

    def upkeep(self, batch_id: int) -> dict[str, float]:
        """The upkeep due at ``batch_id``: compaction, checkpoint, vacuum; seconds per step.

        Each table takes its turn at a different batch of the interval (pin, then geo a third
        of the way on, then user), so one batch pays for at most one table's step of each kind.
        """
        steps = (
            ("compact", self.compact_every, self._compact),
            ("checkpoint", self.checkpoint_every, self._checkpoint),
            ("vacuum", self.vacuum_every, self._vacuum),
        )
        spent: dict[str, float] = {}
        for index, table in enumerate(Table):
            if table not in self.uris:
                continue
            for name, every, action in steps:
                if not every or batch_id < every or (batch_id + index * every // len(Table)) % every:
                    continue
                target = self.table(table, create=False)
                if target is not None:  # a table without rows yet needs no upkeep
                    began = time.perf_counter()
                    action(target)
                    spent[f"{name} {table.value}"] = time.perf_counter() - began
        return spent

    @staticmethod
    def _compact(target: DeltaTable) -> None:
        from deltalake import WriterProperties

        # zstd, as the appends and the raw layer (compaction's own default is snappy).
        target.optimize.compact(writer_properties=WriterProperties(compression="ZSTD"))

    @staticmethod
    def _checkpoint(target: DeltaTable) -> None:
        target.create_checkpoint()
        target.cleanup_metadata()  # log entries older than delta.logRetentionDuration

    def _vacuum(self, target: DeltaTable) -> None:
        # Our retention, not the table's delta.deletedFileRetentionDuration (7 days): the
        # setting is the one place to change it. Full: the files of a write killed before its
        # commit are in no log entry, only a listing finds them (0.035 s for 5,200 files).
        target.vacuum(retention_hours=self.vacuum_retention_hours, enforce_retention_duration=False,
                      dry_run=False, full=True)  # fmt: skip

    def close(self) -> None:
        """Forget the open tables (delta-rs holds no connection or lock)."""
        self._tables.clear()
