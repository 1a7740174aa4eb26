"""A stand-in for the stream job's Delta side, to be SIGKILLed: batches in a loop, replayed on restart.

``python delta_loop.py LAKE STATE BATCHES ROWS EVERY`` writes batches ``0..BATCHES-1`` of
``ROWS`` pin and user rows through :class:`~pinpipe.speed.delta.DeltaWriter` (upkeep every
``EVERY`` batches, vacuum retention 0), keeping a log as Spark's checkpoint does: ``STATE/started``
holds the batch id begun (replaced atomically, as Spark writes its offset log). A restart replays
from two batches before the one begun (further back than Spark replays, which the writer must skip too)
with the same rows: batch ``n`` always holds offsets ``n * ROWS ..``. Prints ``ready`` once
imported, then each batch id.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from pinpipe.events import Table
from pinpipe.speed.delta import PARTITION, DeltaWriter, table_schema

QUERY_ID = "loop-query"
KEYS = 37  # keys repeat across batches, as they do in the stream
T0 = datetime(2026, 12, 1, 23, 59, 50, tzinfo=UTC)  # the batches cross midnight: two dt partitions


def batch(n: int, rows: int) -> dict[Table, pa.Table]:
    """Batch ``n``: the same rows each time it is built."""
    offsets = list(range(n * rows, (n + 1) * rows))
    utc = pa.timestamp("us", tz="UTC")
    arrival = {
        "broker_timestamp": pa.array([T0 + timedelta(milliseconds=100 * o) for o in offsets], utc),
        "kafka_partition": pa.array([o % 2 for o in offsets], pa.int32()),
        "kafka_offset": pa.array(offsets, pa.int64()),
    }
    pins = {
        "ind": pa.array([o % KEYS for o in offsets], pa.int32()),
        "unique_id": [f"u-{o % KEYS}" for o in offsets],
        "title": [f"title {o}" for o in offsets],
    }
    users = {
        "ind": pa.array([o % KEYS for o in offsets], pa.int32()),
        "user_name": [f"user {o}" for o in offsets],
        "age": pa.array([20 + o % 50 for o in offsets], pa.int32()),
    }
    return {Table.PIN: clean_table(Table.PIN, pins | arrival), Table.USER: clean_table(Table.USER, users | arrival)}


def clean_table(table: Table, columns: dict) -> pa.Table:
    """``columns`` and every other column of ``table``'s, null, as the stream job hands them over."""
    rows = len(next(iter(columns.values())))
    return pa.table({
        f.name: columns.get(f.name, pa.nulls(rows, f.type)) for f in table_schema(table) if f.name != PARTITION
    })  # fmt: skip


def main(lake: str, state: str, batches: int, rows: int, every: int) -> None:
    started = Path(state) / "started"
    begun = int(started.read_text()) if started.exists() else 0
    writer = DeltaWriter(
        {table: f"{lake}/{table.value}" for table in (Table.PIN, Table.USER)},
        compact_every=every, checkpoint_every=every, vacuum_every=every, vacuum_retention_hours=0,
    )  # fmt: skip
    print("ready", flush=True)
    for n in range(max(0, begun - 2), batches):
        begin(started, n)
        writer.write(QUERY_ID, n, batch(n, rows))
        print(n, flush=True)


def begin(started: Path, n: int) -> None:
    temporary = started.with_suffix(".tmp")
    temporary.write_text(str(n))
    os.replace(temporary, started)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(arg) for arg in sys.argv[3:6]))
