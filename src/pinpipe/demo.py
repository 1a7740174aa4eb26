"""`pinpipe demo`: the pipeline on embedded defaults, start to finish, then a summary.

Starts (or reuses) the broker and PostgreSQL, loads the source tables into PostgreSQL and
reads them back as the emulator's source (the original projects' RDS role), runs the ingest
API, emulates posts through it, checks that Kafka holds every acknowledged record, prints
what happened and stops everything it started.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table as RichTable

from pinpipe.config import Settings
from pinpipe.events import Table, all_topics, topic_name


@contextmanager
def running_api(settings: Settings, timeout_s: float = 20.0) -> Iterator[str]:
    """The ingest API served by uvicorn in a background thread; yields its base URL."""
    import uvicorn

    from pinpipe.ingest.app import create_app

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=settings.ingest.port, log_level="warning",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, name="pinpipe-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the ingest API did not start; see the log above")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout_s)


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


@contextmanager
def running_sink(settings: Settings, bootstrap: str, timeout_s: float = 60.0) -> Iterator[dict]:
    """The lake sink in a background thread; stopped (flushed and committed) on exit.

    Yields a dict holding the ``sink``; it receives ``stats`` (or ``error``) once stopped.
    """
    from pinpipe.lake import LakeSink

    stop = threading.Event()
    outcome: dict = {"sink": LakeSink(settings, bootstrap, stop)}

    def work() -> None:
        try:
            outcome["stats"] = outcome["sink"].run()
        except Exception as error:  # reported by the caller, after the thread ends
            outcome["error"] = error

    thread = threading.Thread(target=work, name="pinpipe-sink", daemon=True)
    thread.start()
    try:
        yield outcome
    finally:
        stop.set()
        thread.join(timeout=timeout_s)
        if thread.is_alive():
            outcome["error"] = RuntimeError(f"the lake sink did not stop within {timeout_s:.0f} s")


def wait_for_sink(outcome: dict, ends: dict[tuple[str, int], int], timeout_s: float = 60.0) -> bool:
    """Wait until the sink has taken every record up to ``ends``; False at the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and "error" not in outcome:
        positions = outcome["sink"].positions()
        if all(positions.get(key, 0) >= end for key, end in ends.items() if end):
            return True
        time.sleep(0.1)
    return False


@contextmanager
def running_stream(settings: Settings, bootstrap: str, dsn: str, timeout_s: float = 120.0) -> Iterator[dict]:
    """The stream job (Spark Structured Streaming) in a background thread; stopped on exit."""
    from pinpipe.speed import run_stream

    stop = threading.Event()
    started = threading.Event()
    outcome: dict = {}

    def work() -> None:
        try:
            run_stream(settings, bootstrap, dsn, trigger_s=settings.speed.trigger_s, stop_event=stop,
                       started=started)
        except Exception as error:  # reported by the caller
            outcome["error"] = error

    thread = threading.Thread(target=work, name="pinpipe-stream", daemon=True)
    thread.start()
    try:
        # Wait for Spark, so that the latency measured is the stream's, not the JVM's start.
        deadline = time.monotonic() + timeout_s
        while not started.wait(0.2) and thread.is_alive() and time.monotonic() < deadline:
            pass
        yield outcome
    finally:
        stop.set()
        thread.join(timeout=timeout_s)


def speed_rows(dsn: str) -> dict[Table, int]:
    """Rows in the speed layer's tables."""
    import psycopg

    from pinpipe.serve.schema import SPEED_TABLES

    with psycopg.connect(dsn) as conn:
        return {table: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                for table, name in SPEED_TABLES.items()}


def wait_for_stream(dsn: str, outcome: dict, expected: dict[Table, int], timeout_s: float = 180.0) -> dict[Table, int]:
    """Wait until every speed table holds ``expected`` rows (distinct keys), or the deadline."""
    deadline = time.monotonic() + timeout_s
    rows = speed_rows(dsn)
    while time.monotonic() < deadline and "error" not in outcome:
        if all(rows[table] >= count for table, count in expected.items()):
            break
        time.sleep(0.5)
        rows = speed_rows(dsn)
    return rows


def stream_latency(dsn: str) -> tuple[float, float] | None:
    """p50 and p99 seconds from the broker's append (the API's acknowledgement) to the row's upsert."""
    import psycopg

    from pinpipe.serve.schema import SPEED_TABLES

    union = " UNION ALL ".join(
        f"SELECT extract(epoch FROM updated_at - broker_timestamp) AS s FROM {name}" for name in SPEED_TABLES.values()
    )
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            f"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s), percentile_cont(0.99) WITHIN GROUP (ORDER BY s)"
            f" FROM ({union}) AS latencies"
        ).fetchone()
    return None if row[0] is None else (float(row[0]), float(row[1]))


def _forget_earlier_run(settings: Settings, dsn: str, console: Console) -> None:
    """Start from empty: the embedded broker keeps nothing across restarts.

    Its offsets start again at 0, so a raw layer, a stream checkpoint or speed-layer rows
    from an earlier broker would clash with this one's.
    """
    import psycopg

    from pinpipe.lake import lake_root
    from pinpipe.serve.schema import apply_migrations

    shutil.rmtree(lake_root(settings), ignore_errors=True)
    checkpoint = settings.speed.checkpoint_dir or settings.data_dir / "checkpoints" / "speed"
    shutil.rmtree(checkpoint, ignore_errors=True)
    apply_migrations(dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            'TRUNCATE pinpipe.pin, pinpipe.geo, pinpipe."user", pinpipe.dead_letter, pinpipe.stream_batch,'
            " pinpipe.category_per_minute, pinpipe.country_per_minute, pinpipe.poster_activity,"
            " pinpipe.stream_watermark"
        )
    console.print("[green]✓[/] empty lake, stream checkpoint and speed tables (the embedded broker starts empty)")


def _print_lake(settings: Settings, bootstrap: str, sink: dict, held: dict[str, int], console: Console) -> bool:
    """Show what the sink wrote and verify the lake; True when it holds what Kafka holds, once."""
    from pinpipe.lake import list_partitions, verify_lake

    if "error" in sink:
        console.print(f"[red]✗[/] lake sink: {sink['error']}")
        return False
    table = RichTable("table", "dt partitions", "files", "records", title="what the lake holds (raw layer)")
    totals: dict[str, list[int]] = {}
    for info in list_partitions(settings):
        entry = totals.setdefault(info.table, [0, 0, 0])
        entry[0] += 1
        entry[1] += info.files
        entry[2] += info.records
    for name, (partitions, files, records) in sorted(totals.items()):
        table.add_row(name, f"{partitions:,}", f"{files:,}", f"{records:,}")
    console.print(table)
    prefix = settings.broker.topic_prefix
    missing = {name: held[topic_name(prefix, name)] - totals.get(name, [0, 0, 0])[2]
               for name in (table.value for table in Table)}
    if any(missing.values()):
        console.print(f"[red]✗[/] the lake lacks records that Kafka holds: {missing}")
        return False
    report = verify_lake(settings, bootstrap)
    if not report.ok:
        problems = [f"{c.topic}[{c.partition}]: {'; '.join(c.problems)}" for c in report.checks if c.problems]
        console.print("[red]✗[/] lake verify: " + " | ".join(problems))
        return False
    console.print("[green]✓[/] lake verify: every offset once, contiguous, up to the committed offset")
    return True


def _print_speed(dsn: str, stream: dict, rows: dict[Table, int], expected: dict[Table, int],
                 console: Console) -> bool:
    """Rows the stream job upserted against the distinct keys in Kafka, and its latency."""
    if "error" in stream:
        console.print(f"[red]✗[/] stream job: {stream['error']}")
        return False
    table = RichTable("table", "rows in PostgreSQL", "distinct keys in Kafka", title="speed layer (PostgreSQL)")
    for name in Table:
        table.add_row(f"pinpipe.{name.value}", f"{rows[name]:,}", f"{expected[name]:,}")
    console.print(table)
    latency = stream_latency(dsn)
    if latency is not None:
        console.print(f"stream latency, broker acknowledgement to PostgreSQL row: p50 {latency[0]:.2f} s,"
                      f" p99 {latency[1]:.2f} s")
    if any(rows[name] < expected[name] for name in Table):
        console.print("[yellow]![/] the stream job had not caught up within 180 s (it is slow on a busy"
                      " machine; nothing is lost: it resumes from its checkpoint)")
    else:
        console.print("[green]✓[/] every key is in PostgreSQL")
    return True


def _run_batch(settings: Settings, console: Console) -> bool:
    """The batch job over the whole lake: clean tables, the nine answers, quality, PostgreSQL."""
    from pinpipe.batch import QualityError, run_batch
    from pinpipe.batch.job import read_answers
    from pinpipe.batch.show import print_answers, print_counts

    with console.status("batch job: Spark cleans the lake and answers the questions"):
        try:
            result = run_batch(settings, all_dates=True)
        except QualityError as error:
            console.print(f"[red]✗[/] {error}")
            return False
    print_counts(result, console)
    print_answers(read_answers(settings), console, max_rows=5)
    published = sum(result.published.values())
    console.print(f"[green]✓[/] answers written to the lake and to PostgreSQL ({published:,} rows)")
    return True


def run_demo(settings: Settings, *, posts: int, rate: float, console: Console, batch: bool = True) -> int:
    """Run the demo; returns the exit code (0 when every record is where it should be)."""
    from pinpipe.ingest.server import with_bootstrap
    from pinpipe.lake import lake_root
    from pinpipe.services.resolve import kafka_bootstrap, postgres_dsn
    from pinpipe.services.topics import ensure_topics
    from pinpipe.source.database import SOURCE_TABLE_NAMES, load_tables, read_tables
    from pinpipe.source.emulation import print_summary, run_with_progress
    from pinpipe.source.generator import generate_tables

    began = time.monotonic()
    with console.status("starting the embedded broker and PostgreSQL"):
        stack = _services(settings, kafka_bootstrap, postgres_dsn)
        bootstrap, dsn = next(stack)
    try:
        console.print(f"[green]✓[/] broker at {bootstrap}; PostgreSQL ready")
        client_config = settings.broker.client_config(bootstrap)
        prefix = settings.broker.topic_prefix
        topics = [topic_name(prefix, table) for table in Table]
        created = ensure_topics(client_config, all_topics(prefix), settings.broker.partitions)
        console.print("[green]✓[/] topics: " + ", ".join(f"{t} ({state})" for t, state in created.items()))

        embedded = settings.broker.bootstrap_servers is None and settings.postgres.dsn is None
        if embedded and settings.lake.root is None:
            _forget_earlier_run(settings, dsn, console)

        generated = generate_tables(settings.source.seed, settings.source.rows)
        loaded = load_tables(generated, dsn)
        tables = read_tables(dsn)
        console.print(
            "[green]✓[/] source tables loaded into PostgreSQL: "
            + ", ".join(f"{SOURCE_TABLE_NAMES[t]} {n:,} rows" for t, n in loaded.items())
        )

        api_settings = with_bootstrap(settings, bootstrap).model_copy(
            update={"ingest": settings.ingest.model_copy(update={"port": 0})}
        )
        with (
            running_stream(settings, bootstrap, dsn) as stream,
            running_sink(settings, bootstrap) as sink,
            running_api(api_settings) as base_url,
        ):
            console.print(f"[green]✓[/] ingest API at {base_url}; lake sink writing to {lake_root(settings)};"
                          " stream job writing to PostgreSQL")
            emulating = settings.model_copy(
                update={"emulator": settings.emulator.model_copy(update={"base_url": base_url, "rate": rate})}
            )
            stats = run_with_progress(emulating, count=posts, duration_s=None, tables=tables, console=console)
            print_summary(stats, console)
            held, ends, distinct = read_topics(client_config, topics, expected=stats.accepted)
            with console.status("waiting for the lake sink to take every record"):
                if not wait_for_sink(sink, ends):
                    sink.setdefault("error", RuntimeError("the lake sink did not catch up within 60 s"))
            expected_rows = {table: distinct[topic_name(prefix, table)] for table in Table}
            with console.status("waiting for the stream job to upsert every key into PostgreSQL"):
                rows = wait_for_stream(dsn, stream, expected_rows)

        summary = RichTable("topic", "records in Kafka", title="what Kafka holds")
        for topic, count in held.items():
            summary.add_row(topic, f"{count:,}")
        summary.add_row("[bold]total[/]", f"[bold]{sum(held.values()):,}[/]")
        console.print(summary)
        lost = stats.accepted - sum(held.values())
        if lost > 0 or stats.failed:
            console.print(f"[red]✗[/] {lost} acknowledged records missing, {stats.failed} failed")
            return 1
        console.print("[green]✓[/] every acknowledged record is in Kafka")
        # Leaving the block above stopped the sink: it wrote what it buffered and committed.
        if not _print_lake(settings, bootstrap, sink, held, console):
            return 1
        if not _print_speed(dsn, stream, rows, expected_rows, console):
            return 1
        if batch and not _run_batch(settings, console):
            return 1
        console.print(f"demo finished in {time.monotonic() - began:.1f} s")
        return 0
    finally:
        with console.status("stopping what the demo started"):
            stack.close()


def _services(settings, kafka_bootstrap, postgres_dsn) -> Iterator[tuple[str, str]]:
    # A generator so that run_demo can show a spinner while starting and stop in `finally`.
    with postgres_dsn(settings) as dsn, kafka_bootstrap(settings) as bootstrap:
        yield bootstrap, dsn
