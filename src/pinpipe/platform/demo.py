"""`pinpipe demo`: `pinpipe up` with the emulator for a bounded run, the batch job, a checked summary.

Starts (or reuses) the broker and PostgreSQL and loads the source tables into PostgreSQL, which
the emulator reads back (the original projects' RDS role). Then it runs `pinpipe up`
(:func:`pinpipe.platform.up.run_up`) with the emulator for a bounded time: the real processes (API, lake
sink, stream job, dashboard), drained and stopped cleanly at the end. Then the batch job, then
the summary, checked: Kafka holds every record the API accepted, the lake holds every Kafka
record exactly once, PostgreSQL holds every key, the stream's Delta tables hold every record
that parsed once and their latest rows equal PostgreSQL's, and the speed layer's rows equal the
batch layer's clean tables value for value; with the stream latency and the nine answers.
It stops the services it started; with ``keep_running`` it first runs `pinpipe up` again,
unbounded, for the dashboard, until Ctrl-C.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table as RichTable

from pinpipe.config import Settings, client_host
from pinpipe.events import Table, topic_name
from pinpipe.platform.demo_counts import (
    dead_letters,
    delta_rows,
    lake_records,
    layers_compared,
    read_topics,
    speed_rows,
    stream_latency,
)

if TYPE_CHECKING:
    from pinpipe.batch.job import BatchResult
    from pinpipe.lake.inventory import VerifyReport
    from pinpipe.serve.reconcile import LayerComparison


def _forget_earlier_run(settings: Settings, dsn: str, console: Console) -> None:
    """Start from empty: the embedded broker keeps nothing across restarts.

    Its offsets start again at 0, so a raw layer, a stream checkpoint or speed-layer rows
    from an earlier broker would clash with this one's.
    """
    import psycopg

    from pinpipe.lake import lake_root
    from pinpipe.speed.job import checkpoint_location
    from pinpipe.store.schema import SPEED_STATE_TABLES, apply_migrations

    shutil.rmtree(lake_root(settings), ignore_errors=True)
    shutil.rmtree(checkpoint_location(settings), ignore_errors=True)
    apply_migrations(dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute(f"TRUNCATE {', '.join(SPEED_STATE_TABLES)}")
    console.print("[green]✓[/] empty lake, stream checkpoint and speed tables (the embedded broker starts empty)")


def _dashboard_port(settings: Settings) -> int:
    """The configured dashboard port when it is free, else a free one (a busy 8080 must not stop
    the demo). Chosen once, so that ``keep_running`` serves the dashboard at the same address."""
    from pinpipe.services.broker import free_port

    dashboard = settings.up.dashboard
    if dashboard.port:
        with socket.socket() as sock:
            try:
                sock.bind((dashboard.host, dashboard.port))
                return dashboard.port
            except OSError:
                pass
    return free_port()


def _up_settings(settings: Settings, dsn: str) -> Settings:
    """The demo's `pinpipe up`: free ports for what only it talks to, the emulator reading PostgreSQL."""
    from pydantic import SecretStr

    up = settings.up
    return settings.model_copy(update={
        "ingest": settings.ingest.model_copy(update={"port": 0}),
        "up": up.model_copy(update={
            "lake_metrics_port": 0, "stream_metrics_port": 0,
            "dashboard": up.dashboard.model_copy(update={"port": _dashboard_port(settings)}),
        }),
        "source": settings.source.model_copy(update={"dsn": SecretStr(dsn)}),
    })  # fmt: skip


def _run_batch(settings: Settings, console: Console) -> tuple[BatchResult | None, str]:
    """The batch job over the whole lake, in this process; the result, or None and why."""
    from pinpipe.batch import QualityError, run_batch
    from pinpipe.spark.session import spark_session

    console.print("[cyan]batch[/] starting: Spark cleans the lake, answers the questions, checks quality, publishes")
    # The session (and its JVM) ends with the step: not needed while `keep_running` runs.
    with console.status("batch job running"), spark_session(settings, app_name="pinpipe-batch") as spark:
        try:
            return run_batch(settings, all_dates=True, spark=spark), ""
        except QualityError as error:
            return None, str(error)


def _check(console: Console, ok: bool, text: str, *, warn_only: bool = False) -> bool:
    mark = "[green]✓[/]" if ok else "[yellow]![/]" if warn_only else "[red]✗[/]"
    console.print(f"{mark} {text}")
    return ok or warn_only


def _print_summary(settings: Settings, *, last_run: dict, held: dict[Table, int], distinct: dict[Table, int],
                   in_lake: dict[str, int], report: VerifyReport, rows: dict[Table, int],
                   delta: dict[Table, int] | None, dead: dict[Table, int],
                   latency: tuple[float, float] | None, batch: tuple[BatchResult | None, str] | None,
                   caught_up: bool, layers: list[LayerComparison] | str | None,
                   streams: list[LayerComparison] | str | None, console: Console) -> bool:
    """Print what the run did, each figure checked against the others; True when every check passed."""
    from pinpipe.batch.job import read_answers
    from pinpipe.batch.show import print_answers, print_counts

    api, emulated = last_run.get("api") or {}, last_run.get("emulator") or {}
    accepted = int(api.get("accepted") or 0)
    passed = True
    console.rule("demo summary")
    if emulated:
        console.print(f"emulator: {emulated['posts']:,} posts, {emulated['sent']:,} records sent: "
                      f"{emulated['accepted']:,} accepted, {emulated['rejected']:,} rejected, "
                      f"{emulated['failed']:,} failed ({emulated['retried']:,} retries)")  # fmt: skip
    else:
        console.print("[yellow]![/] emulator: no counts (it wrote none: killed before its first second?)")
    console.print(f"ingest API: {accepted:,} records accepted, {int(api.get('rejected') or 0):,} rejected")

    table = RichTable("table", "in Kafka", "in the lake", "distinct keys", "PostgreSQL rows", "Delta rows",
                      "dead letters", title="records")
    for name in Table:
        table.add_row(name.value, f"{held[name]:,}", f"{in_lake.get(name.value, 0):,}", f"{distinct[name]:,}",
                      f"{rows[name]:,}", f"{delta[name]:,}" if delta is not None else "off", f"{dead[name]:,}")
    table.add_row("[bold]total[/]", f"[bold]{sum(held.values()):,}[/]",
                  f"[bold]{sum(in_lake.get(name.value, 0) for name in Table):,}[/]", "", "",
                  f"[bold]{sum(delta.values()):,}[/]" if delta is not None else "", f"{sum(dead.values()):,}")
    console.print(table)
    if latency is not None:
        console.print(f"stream latency, broker acknowledgement to PostgreSQL row: p50 {latency[0]:.2f} s,"
                      f" p99 {latency[1]:.2f} s")

    if emulated:
        passed &= _check(console, not emulated["failed"], f"the emulator had an answer to every post "
                         f"({emulated['failed']:,} records failed)")  # fmt: skip
    passed &= _check(console, accepted > 0, f"the API accepted {accepted:,} records")
    lost = accepted - sum(held.values())
    passed &= _check(console, lost <= 0, "Kafka holds every record the API accepted"
                     + (f" ({lost:,} missing)" if lost > 0 else ""))
    short = {t.value: held[t] - in_lake.get(t.value, 0) for t in Table if held[t] != in_lake.get(t.value, 0)}
    problems = "".join(f"; {c.topic}[{c.partition}]: {', '.join(c.problems)}" for c in report.checks if c.problems)
    passed &= _check(console, not short and report.ok,
                     "the lake holds every Kafka record exactly once (lake verify: offsets contiguous,"
                     " no duplicates, up to the committed offset)"
                     + (f"; Kafka minus lake: {short}" if short else "") + problems)
    # Only a warning: a stream job slow on a busy machine resumes from its checkpoint, nothing is lost.
    _check(console, caught_up, "PostgreSQL holds every key (rows == distinct keys in Kafka)" if caught_up
           else "the stream job had not caught up when the run stopped (it resumes from its checkpoint)",
           warn_only=True)
    if delta is not None and caught_up:
        # Delta gets every record that parsed (a batch is appended after its PostgreSQL commit).
        missing = {t.value: held[t] - dead[t] - delta[t] for t in Table if held[t] != dead[t] + delta[t]}
        passed &= _check(console, not missing, "the stream's Delta tables hold every Kafka record that parsed,"
                         " once (Delta rows + dead letters == records in Kafka)"
                         + (f"; Kafka minus both: {missing}" if missing else ""))
    if isinstance(streams, str):
        _check(console, False, f"the Delta tables and PostgreSQL not compared: {streams}", warn_only=True)
    elif streams is not None:
        counts = ", ".join(f"{c.table.value} {c.equal_rows:,}" for c in streams)
        differences = "".join(f"; {d}" for c in streams for d in c.differences)
        passed &= _check(console, all(c.ok for c in streams), "the stream's Delta tables (latest row per key)"
                         f" equal the speed layer (PostgreSQL) value for value: {counts} rows equal" + differences)

    if batch is not None:
        result, error = batch
        if result is None:
            passed &= _check(console, False, f"batch job: {error}")
        else:
            print_counts(result, console)
            print_answers(read_answers(settings), console, max_rows=5)
            published = sum(result.published.values())
            passed &= _check(console, True, f"the answers written to the lake and to PostgreSQL ({published:,} rows)")
    if isinstance(layers, str):
        _check(console, False, f"the speed and batch layers not compared: {layers}", warn_only=True)
    elif layers is not None:
        agree = all(c.ok for c in layers)
        counts = ", ".join(f"{c.table.value} {c.equal_rows:,}" for c in layers)
        differences = "".join(f"; {d}" for c in layers for d in c.differences)
        passed &= _check(console, agree, "the speed layer (PostgreSQL) equals the batch layer (lake clean tables) "
                         f"value for value: {counts} rows equal" + differences)
    return passed


def _cluster_tasks(settings: Settings, since: float, console: Console, *, batch: bool) -> bool:
    """On the embedded Spark cluster: its master, and how many tasks each job ran on each
    executor (from Spark's event logs); checked: every task of both jobs ran on an executor."""
    from pinpipe.services.spark_cluster import EMBEDDED_MASTER, embedded_master_url
    from pinpipe.spark.event_log import applications

    if settings.batch.spark_master != EMBEDDED_MASTER:
        return True
    master = embedded_master_url(settings)
    apps = {app.name: app for app in applications(settings, since)}  # the latest of each name
    wanted = ["pinpipe-stream", *(["pinpipe-batch"] if batch else [])]
    console.print(f"Spark cluster {master}:")
    for app in apps.values():
        console.print(f"  {app.describe()}")
    ran = [name for name in wanted if name in apps and sum(apps[name].tasks.values())
           and "driver" not in apps[name].tasks and apps[name].master == master]
    return _check(console, ran == wanted, f"the Spark jobs ran their tasks on the cluster's executors "
                  f"({', '.join(ran) or 'none'} of {', '.join(wanted)})")


def run_demo(settings: Settings, *, rate: float, duration_s: float, console: Console, batch: bool = True,
             keep_running: bool = False) -> int:
    """Run the demo; returns the exit code (0 when every record is where it should be)."""
    from pinpipe.platform.run import report_failure, start_services, stop_services
    from pinpipe.platform.state import read_state
    from pinpipe.platform.up import INTERRUPTED
    from pinpipe.services.resolve import kafka_bootstrap, postgres_dsn

    began = time.monotonic()

    def tell(name: str, message: str) -> None:
        console.print(f"[cyan]{name}[/] {message}")

    running = read_state(settings)
    if running is not None:
        console.print(f"[red]pinpipe up is already running[/] (pid {running['pid']}): `pinpipe down` stops it")
        return 1
    # SIGTERM as Ctrl-C: the `finally` below stops what the demo started. The flag tells an
    # interruption from a failure even when the KeyboardInterrupt surfaced inside a C callback
    # (confluent-kafka's), where Python turns it into a SystemError.
    interrupted = threading.Event()

    def interrupt(signum: int, frame: object) -> None:
        interrupted.set()
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    started: list[str] = []
    try:
        with console.status("starting the embedded broker and PostgreSQL"):
            statuses, started = start_services(settings, tell)
        for status in statuses:
            mark = "[green]✓[/]" if status.healthy else "[red]✗[/]"
            console.print(f"{mark} {status.name} ({status.mode}) {status.address}: {status.detail}")
        if not all(status.healthy for status in statuses):
            return 1
        if any(s.name == "broker" and s.mode == "embedded" for s in statuses) and "broker" not in started:
            # Its topics hold earlier records: the demo's exact checks (Kafka = lake = PostgreSQL)
            # need the empty broker it starts itself.
            console.print("[red]the embedded broker is already running[/] (`pinpipe services up`?), with the"
                          " records of earlier runs; the demo starts from an empty one. Stop it with"
                          " `pinpipe services down` (it keeps nothing across restarts anyway), or use"
                          " `pinpipe up --emulate RATE` to run on it.")
            return 1
        # The services are up now: these resolve to them and leave them running.
        with kafka_bootstrap(settings) as bootstrap, postgres_dsn(settings) as dsn:
            return _run(settings, bootstrap, dsn, started, rate=rate, duration_s=duration_s, console=console,
                        batch=batch, keep_running=keep_running, began=began)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return INTERRUPTED
    except Exception as error:  # a service that cannot start, the batch step, the summary
        if interrupted.is_set():
            console.print("[yellow]interrupted[/]")
            return INTERRUPTED
        report_failure(console, settings, "pinpipe demo", error)
        return 1
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        with console.status("stopping what the demo started"):
            stop_services(settings, started, tell)
        for s, handler in previous.items():
            signal.signal(s, handler)


def _run(settings: Settings, bootstrap: str, dsn: str, started: list[str], *, rate: float, duration_s: float,
         console: Console, batch: bool, keep_running: bool, began: float) -> int:
    """The demo once the services run: source tables, bounded `pinpipe up`, read-back, batch, summary."""
    from pinpipe.platform.state import LAST_RUN_FILE
    from pinpipe.platform.up import INTERRUPTED, UpOptions, run_up
    from pinpipe.source.database import SOURCE_TABLE_NAMES, load_tables
    from pinpipe.source.generator import generate_tables

    since = time.time()  # the event logs of this run's Spark applications are newer
    fresh_broker = "broker" in started
    if fresh_broker and settings.postgres.dsn is None and settings.lake.root is None:
        _forget_earlier_run(settings, dsn, console)
    loaded = load_tables(generate_tables(settings.source.seed, settings.source.rows), dsn)
    console.print("[green]✓[/] source tables loaded into PostgreSQL (the emulator reads them): "
                  + ", ".join(f"{SOURCE_TABLE_NAMES[t]} {n:,} rows" for t, n in loaded.items()))

    up_settings = _up_settings(settings, dsn)
    console.rule(f"pinpipe up: the emulator posts {rate:g} posts/s for {duration_s:g} s")
    code = run_up(up_settings, UpOptions(emulate_rate=rate, duration_s=duration_s), console)
    if code == INTERRUPTED:
        raise KeyboardInterrupt
    if code != 0:
        console.print("[red]✗[/] pinpipe up did not run cleanly: see the messages above and the logs in"
                      f" {settings.data_dir / 'logs'}")
        return 1
    last_run = json.loads((settings.run_dir / LAST_RUN_FILE).read_text(encoding="utf-8"))
    if last_run.get("stopped_by") != "duration":
        raise KeyboardInterrupt

    from pinpipe.lake import verify_lake

    prefix = settings.broker.topic_prefix
    topics = {table: topic_name(prefix, table) for table in Table}
    accepted = int((last_run.get("api") or {}).get("accepted") or 0)
    with console.status("reading Kafka, the lake and PostgreSQL back"):
        held, _, distinct = read_topics(settings.broker.client_config(bootstrap), list(topics.values()),
                                        expected=accepted)
        in_lake, report = lake_records(settings), verify_lake(settings, bootstrap)
        rows, latency = speed_rows(dsn), stream_latency(dsn)
        delta, dead = delta_rows(settings), dead_letters(dsn, topics)
    batch_outcome = _run_batch(settings, console) if batch else None
    distinct_keys = {t: distinct[topics[t]] for t in Table}
    # Only a stream that took every record can equal the batch layer, which took them all.
    caught_up = all(rows[t] == distinct_keys[t] for t in Table)
    streams: list[LayerComparison] | str | None = None
    if delta is not None:
        streams = layers_compared(settings, dsn, stream=True) if caught_up else "the stream job had not caught up"
    layers: list[LayerComparison] | str | None = None
    if batch_outcome is not None and batch_outcome[0] is not None:
        layers = layers_compared(settings, dsn) if caught_up else "the stream job had not caught up"
    passed = _print_summary(
        settings, last_run=last_run, held={t: held[topics[t]] for t in Table},
        distinct=distinct_keys, in_lake=in_lake, report=report, rows=rows, delta=delta, dead=dead,
        latency=latency, batch=batch_outcome, caught_up=caught_up, layers=layers, streams=streams,
        console=console,
    )
    passed &= _cluster_tasks(settings, since, console, batch=batch)
    verdict = "every check passed" if passed else "[red]a check failed[/]"
    console.print(f"demo finished in {time.monotonic() - began:.0f} s: {verdict}")
    if not keep_running:
        return 0 if passed else 1
    dashboard = up_settings.up.dashboard
    host = client_host(dashboard.host)
    console.rule(f"keeping everything up: dashboard at http://{host}:{dashboard.port}; Ctrl-C stops it")
    code = run_up(up_settings, UpOptions(emulate_rate=rate), console)
    return 0 if passed and code == 0 else 1
