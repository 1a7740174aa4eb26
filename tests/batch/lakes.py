"""Small raw lakes for the job tests: hand-written, and generated with duplicates."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from pinpipe.events import Table
from pinpipe.source.generator import generate_tables
from tests.batch.rawfiles import write_raw

DAY_1, DAY_2 = "2024-03-01", "2024-03-02"
PARTITIONS = 3


def write_generated_lake(lake: Path, *, seed: int = 7, rows: int = 1500) -> dict[str, int]:
    """Generated posts over two days in three partitions, with the duplicates real input has.

    Day 1: every post once; three unparseable geo values. Day 2: a third of the posts again
    (some pins with a new follower count: the later one must win), a tenth of them twice.
    Returns the raw record count per table.
    """
    tables = generate_tables(seed, rows)
    rng = random.Random(seed)
    again = rng.sample(range(rows), rows // 3)
    twice = again[: rows // 10]
    changed = set(again[: rows // 20])
    counts = {}
    for table in Table:
        day_1: list[dict[str, Any] | str | None] = list(tables.rows(table))
        if table is Table.GEO:
            day_1 += ["{not json", None, '{"country": "Chad"}']
        day_2 = []
        for row in again + twice:
            record = dict(tables.rows(table)[row])
            if table is Table.PIN and row in changed:
                record["follower_count"] = f"{row % 9 + 1}.5k"
            day_2.append(record)
        counts[table.value] = len(day_1) + len(day_2)
        for day, records in ((DAY_1, day_1), (DAY_2, day_2)):
            for partition in range(PARTITIONS):
                write_raw(lake, table, records[partition::PARTITIONS], day=day, partition=partition)
    return counts
