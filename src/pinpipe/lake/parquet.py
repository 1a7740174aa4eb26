"""The Parquet sink: each batch of :mod:`pinpipe.lake.buffer` becomes one raw Parquet file.

:meth:`ParquetSink.write` encodes a batch (:mod:`pinpipe.lake.encode`), names its file by table,
day, topic, partition, first offset and log generation (:mod:`pinpipe.lake.layout`) and puts it
atomically (:mod:`pinpipe.lake.storage`), retrying a transient storage error for up to
``storage_retry_s``. Re-writing a batch from the same first offset replaces its file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TypeVar

from pinpipe.config.lake import LakeSettings
from pinpipe.lake.buffer import Batch, BatchingSink
from pinpipe.lake.encode import encode_records, to_parquet_bytes
from pinpipe.lake.errors import SinkStopped, StorageError
from pinpipe.lake.layout import file_path, table_for_topic
from pinpipe.lake.logs import LostRange
from pinpipe.lake.metrics import SinkMetrics
from pinpipe.lake.storage import LakeStorage

log = logging.getLogger("pinpipe.lake")

T = TypeVar("T")


@dataclass
class SinkStats:
    """What one run of the sink wrote."""

    records: int = 0
    parquet_bytes: int = 0
    files: int = 0
    commits: int = 0
    lost: list[LostRange] = field(default_factory=list)  # of broker logs that ended meanwhile
    records_by_table: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0


def with_retries(action: Callable[[], T], settings: LakeSettings, metrics: SinkMetrics) -> T:
    """``action()``, retried with backoff while it raises a transient :class:`StorageError`, for
    up to ``settings.storage_retry_s``; a terminal one, or one that outlasts that, stops the
    sink (:class:`SinkStopped`)."""
    deadline = time.monotonic() + settings.storage_retry_s
    delay = 0.2
    while True:
        try:
            return action()
        except StorageError as exc:
            if not exc.transient:
                metrics.errors.labels("storage").inc()
                raise SinkStopped(f"terminal storage error, nothing committed past it: {exc}") from exc
            if time.monotonic() + delay > deadline:
                metrics.errors.labels("storage").inc()
                raise SinkStopped(
                    f"storage still failing after {settings.storage_retry_s:.0f} s: {exc}"
                ) from exc
            metrics.errors.labels("storage_retry").inc()
            log.warning("lake sink: %s; retrying in %.1f s", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class ParquetSink(BatchingSink):
    """A :class:`~pinpipe.lake.buffer.BatchingSink` writing each batch as one raw Parquet file
    into ``storage``; counts what it wrote in ``stats`` and ``metrics``.

    ``generation`` is the broker log the records come from (:mod:`pinpipe.lake.logs`): files of
    a later log never replace an earlier log's. The owner sets it when it enters a log.
    """

    def __init__(self, settings: LakeSettings, storage: LakeStorage,
                 metrics: SinkMetrics | None = None, stats: SinkStats | None = None,
                 checkpoint: Callable[[], None] | None = None) -> None:  # fmt: skip
        super().__init__(settings, metrics, checkpoint)
        self.storage = storage
        self.stats = stats or SinkStats()
        self.generation = 0

    def write(self, batch: Batch) -> None:
        """Encode the batch and put its file atomically (replacing one of the same name)."""
        started = time.perf_counter()
        table_name = table_for_topic(batch.topic)
        table = encode_records(
            batch.topic, batch.partition, batch.values, batch.keys, batch.offsets,
            batch.timestamps, datetime.now(timezone.utc),
        )  # fmt: skip
        data = to_parquet_bytes(table)
        del table
        path = file_path(table_name, batch.day, batch.topic, batch.partition,
                         batch.first_offset, self.generation)  # fmt: skip
        replaced = with_retries(lambda: self.storage.write_atomic(path, data), self.settings,
                                self.metrics)  # fmt: skip
        rows = len(batch.offsets)
        if replaced:  # written before a crash or by a zombie, never committed
            log.info("lake sink: replaced %s (offsets %d..%d re-written)", path,
                     batch.first_offset, batch.offsets[-1])  # fmt: skip
        self.metrics.flush_seconds.observe(time.perf_counter() - started)
        self.metrics.records.labels(table_name).inc(rows)
        self.metrics.bytes.labels(table_name).inc(data.size)
        self.metrics.files.labels(table_name).inc()
        stats = self.stats
        stats.records += rows
        stats.parquet_bytes += data.size
        stats.files += 1
        stats.records_by_table[table_name] = stats.records_by_table.get(table_name, 0) + rows
