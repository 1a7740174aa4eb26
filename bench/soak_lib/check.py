"""The soak's verdict, from its own reading of the lake and PostgreSQL.

The lake's raw files are read with pyarrow (``raw/<table>/dt=*/<topic>+<partition>+<offset>.parquet``;
``value`` is the record as stored in Kafka, whose natural key identifies the soak's record).
An acknowledged record is

- lost when no raw row holds its key;
- duplicated when the lake holds one Kafka record (topic, partition, offset) more than once, or
  holds its key more times than it was sent (a refused or unanswered post may have been written
  before it was sent again: those copies, at other offsets, are at-least-once, not duplicates);
- missing from PostgreSQL when its key is not in the speed table.

The speed tables are then compared with the batch layer's clean tables value for value by
:func:`pinpipe.serve.reconcile.compare_layers`, the comparison ``pinpipe demo`` makes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from pinpipe.events import Table


@dataclass
class LakeContents:
    keys: dict[str, Counter] = field(default_factory=dict)  # table -> key -> raw rows
    coordinates: Counter = field(default_factory=Counter)  # (topic, partition, offset) -> rows
    key_at: dict = field(default_factory=dict)  # (table, partition, offset) -> key
    files: int = 0
    rows: int = 0
    unreadable: list[str] = field(default_factory=list)


def read_lake(lake_root: Path) -> LakeContents:
    import pyarrow.parquet as pq

    contents = LakeContents(keys={t.value: Counter() for t in Table})
    for table in Table:
        for path in sorted((lake_root / "raw" / table.value).glob("dt=*/*.parquet")):
            if path.name.count("+") != 2:
                continue  # not a committed raw file (a temporary one)
            try:
                data = pq.read_table(path, columns=["value", "topic", "partition", "offset"]).to_pydict()
            except Exception as error:
                contents.unreadable.append(f"{path}: {error}")
                continue
            contents.files += 1
            natural = table.natural_key
            for value, topic, partition, offset in zip(data["value"], data["topic"], data["partition"],
                                                       data["offset"]):
                contents.rows += 1
                contents.coordinates[(topic, partition, offset)] += 1
                try:
                    key = str(orjson.loads(value)[natural])
                except (ValueError, KeyError, TypeError):
                    key = f"<unparsable at {topic}[{partition}]@{offset}>"
                contents.keys[table.value][key] += 1
                contents.key_at[(table.value, partition, offset)] = key
    return contents


def speed_keys(dsn: str) -> dict[str, set[str]]:
    import psycopg

    from pinpipe.store.schema import SPEED_TABLES

    with psycopg.connect(dsn) as conn:
        return {
            table.value: {str(k) for (k,) in conn.execute(f'SELECT "{table.natural_key}"::text FROM {name}')}
            for table, name in SPEED_TABLES.items()
        }


@dataclass
class RecordVerdict:
    sent: int = 0
    acknowledged: int = 0
    refused_answers: int = 0  # 429/503 answers to records
    no_answer: int = 0
    never_acknowledged: int = 0
    unexpected: int = 0
    lost: int = 0
    duplicated: int = 0
    resent_copies: int = 0  # extra lake copies of a record sent more than once (allowed)
    missing_from_pg: int = 0
    coordinate_duplicates: int = 0
    slot_mismatch: int = 0  # the 200's (partition, offset) does not hold the record's key
    examples: dict[str, list[str]] = field(default_factory=dict)

    def example(self, kind: str, text: str) -> None:
        found = self.examples.setdefault(kind, [])
        if len(found) < 5:
            found.append(text)


def judge_records(ledger: dict, lake: LakeContents, pg: dict[str, set[str]] | None) -> RecordVerdict:
    verdict = RecordVerdict()
    verdict.coordinate_duplicates = sum(n - 1 for n in lake.coordinates.values() if n > 1)
    for (table, key), state in ledger.items():
        verdict.sent += 1
        verdict.refused_answers += state.refused
        verdict.no_answer += state.no_answer
        verdict.unexpected += state.unexpected
        copies = lake.keys[table].get(key, 0)
        if state.ok == 0:
            verdict.never_acknowledged += 1
            continue
        verdict.acknowledged += 1
        if copies == 0:
            verdict.lost += 1
            verdict.example("lost", f"{table} {key} (acknowledged at partition {state.partition} offset {state.offset})")
        elif copies > state.attempts:
            verdict.duplicated += 1
            verdict.example("duplicated", f"{table} {key}: {copies} copies in the lake, sent {state.attempts} times")
        elif copies > 1:
            verdict.resent_copies += copies - 1
        if copies and lake.key_at.get((table, state.partition, state.offset)) != key:
            verdict.slot_mismatch += 1
            verdict.example("slot mismatch", f"{table} {key}: acknowledged at partition {state.partition} offset"
                            f" {state.offset}, which holds {lake.key_at.get((table, state.partition, state.offset))!r}")
        if pg is not None and key not in pg[table]:
            verdict.missing_from_pg += 1
            verdict.example("missing from PostgreSQL", f"{table} {key}")
    verdict.duplicated += verdict.coordinate_duplicates
    return verdict
