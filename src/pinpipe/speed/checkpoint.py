"""What the stream job's Spark checkpoint says it has done: the offsets of its last committed batch.

Spark writes ``offsets/<batch>`` (the batch's end offsets, planned before it runs) and then
``commits/<batch>`` once the batch's sink (the PostgreSQL transaction) succeeded. The end
offsets of the highest batch with a commit are what the query has written for good: unlike a
process's counters they survive restarts, so ``pinpipe up`` drains against them.
"""

from __future__ import annotations

import json
from pathlib import Path

PartitionKey = tuple[str, int]


def committed_offsets(location: str) -> dict[PartitionKey, int] | None:
    """``{(topic, partition): next offset}`` of the last committed batch of the query whose
    checkpoint is at ``location`` (a local path or ``file:`` URL); None when it has committed
    nothing yet or the checkpoint is not local."""
    path = Path(location.removeprefix("file://").removeprefix("file:"))
    if "://" in location.removeprefix("file://"):
        return None
    batches = [int(p.name) for p in (path / "commits").glob("[0-9]*") if p.name.isdigit()]
    if not batches:
        return None
    try:
        lines = (path / "offsets" / str(max(batches))).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    # "v1", the batch's metadata, then one line per source: {topic: {"<partition>": offset}},
    # with the source's log mark under "@log" (pinpipe.speed.offsets.split_log)
    from pinpipe.speed.offsets import split_log

    offsets: dict[PartitionKey, int] = {}
    for line in lines[2:]:
        try:
            source = json.loads(line)
        except ValueError:
            continue
        if isinstance(source, dict):
            for topic, partitions in split_log(source)[0].items():
                for partition, offset in partitions.items():
                    offsets[(topic, int(partition))] = int(offset)
    return offsets
