"""What ``pinpipe demo`` counts to check its summary: the records in Kafka, the lake, the speed
tables, the dead letters and the Delta tables, the stream latency, the two layers compared.

Each count reads the system itself (a consumer, PostgreSQL, the lake's files), never a
component's own figures.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pinpipe.config import Settings
from pinpipe.events import Table

if TYPE_CHECKING:
    from pinpipe.serve.reconcile import LayerComparison


def read_topics(client_config: dict, topics: list[str], expected: int, timeout_s: float = 30.0
                ) -> tuple[dict[str, int], dict[tuple[str, int], int], dict[str, int]]:
    """Records held by each topic, the end offset of each partition, and distinct keys per topic.

    Reads rather than asking for end offsets, because the embedded broker answers ListOffsets
    with a stale end offset (ARCHITECTURE.md). Stops once ``expected`` records were seen and
    every partition reported its end, or at the deadline.
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({**client_config, "group.id": "pinpipe-demo-count", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    try:
        metadata = consumer.list_topics(timeout=10)
        partitions = [
            TopicPartition(topic, partition, 0)
            for topic in topics
            for partition in metadata.topics[topic].partitions
        ]
        consumer.assign(partitions)
        counts = dict.fromkeys(topics, 0)
        keys: dict[str, set[bytes]] = {topic: set() for topic in topics}
        ends = {(p.topic, p.partition): 0 for p in partitions}
        at_eof: set[tuple[str, int]] = set()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # Every acknowledged record is already in the log: end of every partition is the end.
            if sum(counts.values()) >= expected and len(at_eof) == len(partitions):
                break
            for message in consumer.consume(1000, timeout=0.5):
                key = (message.topic(), message.partition())
                if message.error() is None:
                    counts[message.topic()] += 1
                    keys[message.topic()].add(message.key())
                    ends[key] = message.offset() + 1
                    at_eof.discard(key)
                elif message.error().code() == KafkaError._PARTITION_EOF:
                    at_eof.add(key)
        return counts, ends, {topic: len(found) for topic, found in keys.items()}
    finally:
        consumer.close()


def speed_rows(dsn: str) -> dict[Table, int]:
    """Rows in the speed layer's tables."""
    import psycopg

    from pinpipe.store.schema import SPEED_TABLES

    with psycopg.connect(dsn) as conn:
        return {table: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                for table, name in SPEED_TABLES.items()}


def dead_letters(dsn: str, topics: dict[Table, str]) -> dict[Table, int]:
    """Dead letters of each table's topic in the speed layer (records that gave no clean row)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        found = dict(conn.execute("SELECT topic, count(*) FROM pinpipe.dead_letter GROUP BY topic").fetchall())
    return {table: found.get(topic, 0) for table, topic in topics.items()}


def delta_rows(settings: Settings) -> dict[Table, int] | None:
    """Rows in the stream's Delta tables (0 for one not created yet); None with the output off."""
    if not settings.speed.delta_output:
        return None
    from pinpipe.speed.delta import open_stream_table

    rows = {}
    for table in Table:
        delta = open_stream_table(settings, table)
        rows[table] = delta.to_pyarrow_dataset().count_rows() if delta is not None else 0
    return rows


def stream_latency(dsn: str) -> tuple[float, float] | None:
    """p50 and p99 seconds from the broker's append (the API's acknowledgement) to the row's upsert."""
    import psycopg

    from pinpipe.store.schema import SPEED_TABLES

    union = " UNION ALL ".join(
        f"SELECT extract(epoch FROM updated_at - broker_timestamp) AS s FROM {name}" for name in SPEED_TABLES.values()
    )
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            f"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s), percentile_cont(0.99) WITHIN GROUP (ORDER BY s)"
            f" FROM ({union}) AS latencies"
        ).fetchone()
    return None if row[0] is None else (float(row[0]), float(row[1]))


def lake_records(settings: Settings) -> dict[str, int]:
    """Records in the lake's raw layer per table (from the Parquet footers)."""
    from pinpipe.lake import list_partitions

    records: dict[str, int] = {}
    for info in list_partitions(settings):
        records[info.table] = records.get(info.table, 0) + info.records
    return records


def layers_compared(settings: Settings, dsn: str, *, stream: bool = False) -> list[LayerComparison] | str:
    """The layers compared (the stream's Delta tables with ``stream``), or why they were not (no
    DuckDB, a remote lake)."""
    from pinpipe.serve.reconcile import compare_layers, compare_stream_tables

    try:
        return (compare_stream_tables if stream else compare_layers)(settings, dsn)
    except (ImportError, NotImplementedError) as exc:
        return str(exc)
