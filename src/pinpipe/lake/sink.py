"""The lake sink: every record of the pipeline's topics into raw Parquet, exactly once.

One consumer (group ``settings.lake.sink_group_id``; for a later log of the broker, that name and
``.log<n>``: :func:`pinpipe.lake.logs.sink_group`; no auto-commit) feeds a sink that buffers
records per topic-partition. A buffer becomes a file (:mod:`pinpipe.lake.layout` names it by
topic, partition and first offset) when it reaches ``rotate_records`` records or
``rotate_bytes`` value bytes, when the next record belongs to another UTC day, when its first
record has waited ``rotate_age_s``, when memory is short, and on rebalance and shutdown. After
every round of files is durable (:mod:`pinpipe.lake.storage`), the offsets after them are
committed.

The parts, in data-flow order: :mod:`pinpipe.lake.buffer` (the sink contract: ``add``,
``flush``, the subclass's ``write``; the cutting rules), :mod:`pinpipe.lake.parquet` (``write``:
encode and put a file), :mod:`pinpipe.lake.consumer` (subscribe, poll, flush then commit, lag),
:mod:`pinpipe.lake.broker_loss` (a broker that goes away), and here :func:`run_sink`.

Why this is exactly once (the Secor / Kafka Connect S3 sink method)
-------------------------------------------------------------------
A file is identified by its first offset, and the sink always resumes at a committed offset,
which is always the first offset of the next file. After a crash the restarted sink reads again
from the committed offset C and writes a file named ``...+C.parquet`` in the directory of the
day of record C: the same path as any file written from C before the crash, which it replaces
atomically (rename / single PUT). So a re-written range replaces, never duplicates.

The end of a file is deterministic when it is decided by the records themselves (count, bytes
from the first offset, day change) and time-dependent otherwise (age, memory pressure,
rebalance, shutdown). A crash may leave a time-dependent file [100..180] uncommitted while the
restarted sink writes [100..150] then [151..]: the first replaces the old file (same name), so
offsets 151..180 are only in the new files. That argument breaks only if an uncommitted file
*starting after* 100 could also exist from before the crash, e.g. [181..200] after a
time-dependent [100..180]. The sink prevents that: within one round, a partition's files are
written in offset order and only the last may have a time-dependent end; the round's offsets
are committed synchronously before any further file is written, and a commit that fails for a
reason other than losing the partition stops the sink. The earlier files of a round end on
deterministic boundaries, so a re-run writes them identically (same records; only
``written_at`` differs).

When the broker becomes unreachable, the sink writes out every record it had fetched, writes
nothing more, and waits for the broker (:mod:`pinpipe.lake.broker_loss`): the same log again,
or an empty new one read into files of the next generation, which never replace the old log's.

Limit: a "zombie" that lost its partitions without noticing (a session timeout while blocked
in storage retries) could still replace a file the new owner wrote. Partitions reported lost
(``on_lost``) are dropped without writing, and ``pinpipe lake verify`` detects duplicates.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

from pinpipe.config import Settings
from pinpipe.lake.broker_loss import ensure_pipeline_topics
from pinpipe.lake.consumer import LakeSink
from pinpipe.lake.metrics import SinkMetrics
from pinpipe.lake.parquet import SinkStats
from pinpipe.processes import stop_on_signals

__all__ = ["LakeSink", "SinkStats", "ensure_pipeline_topics", "run_sink"]


def run_sink(
    settings: Settings,
    bootstrap: str,
    stop_event: threading.Event | None = None,
    metrics_port: int | None = None,
) -> SinkStats:
    """Run the lake sink until ``stop_event`` is set (or SIGTERM/SIGINT in the main thread).

    Creates the pipeline's topics if missing (best effort). Raises :class:`SinkStopped` on a
    terminal error, after which nothing past the last durable file has been committed.
    """
    stop_event = stop_event or threading.Event()
    ensure_pipeline_topics(settings, bootstrap)
    metrics = SinkMetrics()
    if metrics_port is not None:
        metrics.serve(metrics_port)
    sink = LakeSink(settings, bootstrap, stop_event, metrics)
    if threading.current_thread() is not threading.main_thread():
        return sink.run()  # a thread of a test or a bench: the process is not ours to tune
    with stop_on_signals(stop_event), _collector_tuned():
        return sink.run()


@contextlib.contextmanager
def _collector_tuned(young_threshold: int = 100_000) -> Iterator[None]:
    """Keep Python's cycle collector from walking every consumed message (process-wide).

    Each batch allocates ``consume_batch`` Message objects that the collector tracks; with the
    default threshold (700 allocations) it ran ~15 young collections per batch, each walking
    messages still alive, and promoted them to older generations that it walked again. The
    messages die by reference counting once a batch is buffered, so collecting every
    ``young_threshold`` allocations loses nothing; ``gc.freeze`` leaves the objects made at
    start-up (modules, settings) out of full collections. Measured: 2.4 instead of 2.9-3.1 CPU
    µs per record (bench/bench_lake_sink.py). Only when the sink owns the process (run_sink in
    the main thread), like the signal handlers.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(young_threshold, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
