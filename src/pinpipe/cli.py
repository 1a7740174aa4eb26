"""The ``pinpipe`` command: a thin Typer shell over the library.

Heavy stacks (Kafka client, PostgreSQL driver, Arrow, Faker, HTTP) are imported inside the
commands, so ``pinpipe --help`` starts quickly and imports none of them.
"""

from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table as RichTable

app = typer.Typer(
    name="pinpipe",
    help="A Lambda-architecture pipeline for Pinterest-style post events.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
services_app = typer.Typer(help="Embedded broker, PostgreSQL and Spark cluster: up, down, status, clean.", no_args_is_help=True)
source_app = typer.Typer(help="The emulated source tables: export, load into SQL.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(source_app, name="source")
lake_app = typer.Typer(help="The data lake: list partitions, verify exactly-once.", no_args_is_help=True)
app.add_typer(lake_app, name="lake")

console = Console()
err_console = Console(stderr=True)


class WireFormatOption(str, Enum):
    rest_proxy = "rest-proxy"
    kinesis = "kinesis"
    legacy = "legacy"
    native = "native"


class DatetimeStyleOption(str, Enum):
    iso = "iso"
    space = "space"
    zoned = "zoned"


class ExportFormat(str, Enum):
    jsonl = "jsonl"
    parquet = "parquet"


ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="TOML config file (default: $PINPIPE_CONFIG or ./pinpipe.toml)."),
]


SparkWorkersOption = Annotated[
    Optional[int],
    typer.Option("--spark-workers", min=0, max=16, help="Also run an embedded standalone Spark cluster of N "
                 "workers on loopback, and run the Spark jobs on it (settings: batch.spark_workers and "
                 "batch.spark_master = 'embedded')."),
]


def _spark_overrides(workers: int | None) -> dict[str, Any] | None:
    """``--spark-workers N``: N workers, and the jobs on them (0: no cluster, jobs as configured)."""
    if workers is None:
        return None
    if workers == 0:
        return {"spark_workers": 0}
    return {"spark_workers": workers, "spark_master": "embedded"}


@app.callback()
def main(ctx: typer.Context, config: ConfigOption = None) -> None:
    """pinpipe: HTTP -> Kafka -> lake (batch, Spark) and PostgreSQL (speed, streaming)."""
    ctx.obj = {"config": config}


def _settings(ctx: typer.Context, **overrides: Any):
    """Effective settings: file < env < the command's flags (those not left unset)."""
    from pinpipe.config import ConfigFileError, load_settings

    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, name = dotted.partition("__")
        if name:
            nested.setdefault(section, {})[name] = value
        else:
            nested[section] = value
    try:
        return load_settings(ctx.obj.get("config") if ctx.obj else None, **nested)
    except ConfigFileError as error:
        err_console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from error


@app.command()
def config(ctx: typer.Context) -> None:
    """Print the effective settings (secrets masked) as JSON."""
    from pinpipe.config import masked_dump

    console.print_json(json.dumps(masked_dump(_settings(ctx))))


# --- services ---------------------------------------------------------------------------------


def _print_statuses(statuses) -> None:
    table = RichTable("service", "mode", "health")
    table.add_column("address", overflow="fold")
    table.add_column("detail", overflow="fold")
    for status in statuses:
        health = "[green]healthy[/]" if status.healthy else "[red]down[/]"
        table.add_row(status.name, status.mode, health, status.address, status.detail)
    console.print(table)


@services_app.command("up")
def services_up(ctx: typer.Context, spark_workers: SparkWorkersOption = None) -> None:
    """Start the embedded broker and PostgreSQL in the background (those not configured external),
    and with --spark-workers N a Spark master and N workers."""
    import signal

    from pinpipe.services.errors import ServiceError
    from pinpipe.services.resolve import services_up as up

    interrupted = []

    def interrupt(signum: int, frame: object) -> None:
        interrupted.append(signum)  # inside a C callback the KeyboardInterrupt becomes a SystemError
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    try:
        statuses = up(_settings(ctx, batch=_spark_overrides(spark_workers)))
    except ServiceError as error:  # what this command started is stopped again
        err_console.print(f"[red]services up failed:[/] {error}")
        raise typer.Exit(1) from error
    except Exception:
        if not interrupted:
            raise
        err_console.print("[yellow]interrupted[/]: stopped what was started")
        raise typer.Exit(130) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: stopped what was started")
        raise typer.Exit(130) from None
    _print_statuses(statuses)
    if not all(status.healthy for status in statuses):
        raise typer.Exit(1)


@services_app.command("down")
def services_down(ctx: typer.Context) -> None:
    """Stop the embedded services started by `pinpipe services up`."""
    from pinpipe.services.resolve import services_down as down

    _print_statuses(down(_settings(ctx)))


@services_app.command("clean")
def services_clean(ctx: typer.Context) -> None:
    """Stop the embedded services and remove what pinpipe keeps for them outside data_dir
    (`make clean` runs this; it then removes data_dir)."""
    from pinpipe.services.resolve import services_clean as clean

    for path in clean(_settings(ctx)):
        console.print(f"removed {path}")


@services_app.command("status")
def services_status(ctx: typer.Context) -> None:
    """Show each service, its address and its health."""
    from pinpipe.services.resolve import services_status as status

    statuses = status(_settings(ctx))
    _print_statuses(statuses)
    if not all(status.healthy for status in statuses):
        raise typer.Exit(1)


# --- looking inside the topics: topics, tail ----------------------------------------------------


def _inspected_broker(ctx: typer.Context) -> dict[str, str]:
    """Client config of the broker there is (configured or running); exit 1 if there is none."""
    from pinpipe.services.resolve import existing_kafka_bootstrap

    settings = _settings(ctx)
    bootstrap = existing_kafka_bootstrap(settings)
    if bootstrap is None:
        err_console.print(
            "[red]error:[/] no broker to look at: none is configured (broker.bootstrap_servers)"
            " and no embedded broker is running (`pinpipe services up` or `pinpipe up`)"
        )
        raise typer.Exit(1)
    return settings.broker.client_config(bootstrap)


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


@app.command()
def topics(
    ctx: typer.Context,
    show_all: Annotated[bool, typer.Option("--all", help="Also internal topics (__*).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Topics with their end offsets, and consumer groups with their lag (read-only)."""
    from rich.markup import escape

    from pinpipe.services.inspect import InspectError, overview

    try:
        found = overview(_inspected_broker(ctx), include_internal=show_all)
    except InspectError as error:
        err_console.print(f"[red]error:[/] {escape(str(error))}")
        raise typer.Exit(1) from error
    if as_json:
        typer.echo(json.dumps(found.as_dict(), indent=2))
        return
    table = RichTable(title=f"topics on {found.bootstrap_servers}")
    table.add_column("topic", no_wrap=True)
    for name in ("partition", "start", "end", "records"):
        table.add_column(name, justify="right")
    for topic in found.topics:
        for p in topic.partitions:
            table.add_row(topic.name, str(p.partition), _count(p.start), _count(p.end),
                          _count(p.records))  # fmt: skip
        table.add_row(f"[bold]{topic.name}[/]", "total", "", f"[bold]{_count(topic.end)}[/]",
                      f"[bold]{_count(topic.records)}[/]", end_section=True)  # fmt: skip
    console.print(table if found.topics else "no topics")
    groups = RichTable(title="consumer groups (committed offsets)")
    for name in ("group", "state", "topic"):
        groups.add_column(name, no_wrap=True)
    for name in ("part", "committed", "end", "lag"):
        groups.add_column(name, justify="right")
    for group in found.groups:
        rows = [(p.topic, str(p.partition), _count(p.committed), _count(p.end), _count(p.lag))
                for p in group.partitions] or [(escape(group.error or "no committed offsets"),)]
        for number, row in enumerate(rows):
            first = number == 0
            groups.add_row(escape(group.group_id) if first else "", group.state if first else "",
                           *row, end_section=number == len(rows) - 1)  # fmt: skip
    console.print(groups if found.groups else "no consumer groups with committed offsets")
    for note in found.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")


@app.command()
def tail(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="e.g. pinpipe.dlq")],
    from_end: Annotated[
        bool, typer.Option("--from-end/--from-beginning", help="Start after the last record.")
    ] = False,
    count: Annotated[
        Optional[int], typer.Option("--count", "-n", min=1, help="Stop after N records.")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep waiting for new records (Ctrl-C stops).")
    ] = False,
    partition: Annotated[Optional[int], typer.Option(min=0, help="Only this partition.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Print a topic's records: partition, offset, time, key, headers, value (commits nothing)."""
    import os
    import sys

    from rich.markup import escape

    from pinpipe.services.inspect import InspectError, Tail

    client_config = _inspected_broker(ctx)
    try:
        with Tail(client_config, topic, partition=partition, from_end=from_end) as reader:
            if follow:
                start = "the end" if from_end else "the first record"
                err_console.print(f"following {topic} from {start}; Ctrl-C stops", style="dim")
            for record in reader.records(count=count, follow=follow):
                typer.echo(json.dumps(record.as_dict()) if as_json else record.as_text())
    except InspectError as error:
        err_console.print(f"[red]error:[/] {escape(str(error))}")
        raise typer.Exit(1) from error
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a follow ends
    except BrokenPipeError:  # `pinpipe tail ... | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# --- source -----------------------------------------------------------------------------------

SeedOption = Annotated[Optional[int], typer.Option(help="Generator seed (settings: source.seed).")]
RowsOption = Annotated[Optional[int], typer.Option(help="Rows per table (settings: source.rows).")]


@source_app.command("export")
def source_export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("data/source"),
    fmt: Annotated[ExportFormat, typer.Option("--format")] = ExportFormat.jsonl,
    seed: SeedOption = None,
    rows: RowsOption = None,
) -> None:
    """Write the generated source tables to JSON lines or Parquet for inspection."""
    from pinpipe.source.export import export_tables
    from pinpipe.source.generator import generate_tables

    settings = _settings(ctx, source__seed=seed, source__rows=rows)
    tables = generate_tables(settings.source.seed, settings.source.rows)
    for path in export_tables(tables, out, fmt.value):
        console.print(f"wrote {path}")


@source_app.command("load")
def source_load(
    ctx: typer.Context,
    dsn: Annotated[
        Optional[str],
        typer.Option(help="Target database (settings: source.dsn); default: the embedded PostgreSQL."),
    ] = None,
    seed: SeedOption = None,
    rows: RowsOption = None,
) -> None:
    """Write the generated source tables into a SQL database (the original's RDS role)."""
    from pinpipe.services.resolve import postgres_dsn
    from pinpipe.source.database import SOURCE_TABLE_NAMES, load_tables
    from pinpipe.source.generator import generate_tables

    settings = _settings(ctx, source__seed=seed, source__rows=rows, source__dsn=dsn)
    tables = generate_tables(settings.source.seed, settings.source.rows)
    target = settings.source.dsn.get_secret_value() if settings.source.dsn else None
    if target is None:
        with postgres_dsn(settings) as embedded:
            counts = load_tables(tables, embedded)
    else:
        counts = load_tables(tables, target)
    for table, count in counts.items():
        console.print(f"{SOURCE_TABLE_NAMES[table]}: {count:,} rows")


# --- emulator ---------------------------------------------------------------------------------


def _write_json_atomically(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@app.command()
def emulate(
    ctx: typer.Context,
    base_url: Annotated[Optional[str], typer.Option(help="Ingest API (settings: emulator.base_url).")] = None,
    wire_format: Annotated[Optional[WireFormatOption], typer.Option("--format", help="Wire format.")] = None,
    rate: Annotated[Optional[float], typer.Option(help="Posts per second.")] = None,
    count: Annotated[Optional[int], typer.Option(help="Stop after this many posts.")] = None,
    duration: Annotated[Optional[float], typer.Option(help="Stop after this many seconds.")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="Requests in flight.")] = None,
    datetime_style: Annotated[Optional[DatetimeStyleOption], typer.Option(help="Datetimes on the wire.")] = None,
    batch_size: Annotated[int, typer.Option(help="Posts per request (native format only).")] = 1,
    source_dsn: Annotated[
        Optional[str], typer.Option(help="Read rows from this database instead of generating them.")
    ] = None,
    seed: SeedOption = None,
    stats_json: Annotated[
        Optional[Path], typer.Option(help="At the end (also when stopped early), write the counts to this JSON file.")
    ] = None,
    stats_dir: Annotated[
        Optional[Path], typer.Option(hidden=True, help="Keep the counts current in <dir>/<pid>.json (up sums them).")
    ] = None,
) -> None:
    """Play the users: post random source rows to the ingest API; Ctrl-C or SIGTERM stops it early."""
    import signal
    import threading
    import time

    from pinpipe.source import emulation

    settings = _settings(
        ctx,
        emulator__base_url=base_url,
        emulator__wire_format=wire_format.value if wire_format else None,
        emulator__rate=rate,
        emulator__concurrency=concurrency,
        emulator__datetime_style=datetime_style.value if datetime_style else None,
        source__dsn=source_dsn,
        source__seed=seed,
    )
    if count is None and duration is None:
        count = 1000
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())  # the requests in flight finish and count
    instance_file = stats_dir / f"{os.getpid()}.json" if stats_dir is not None else None
    written = [0.0]

    def keep_current(stats) -> None:  # a killed emulator loses at most a second of counts
        if instance_file is not None and time.monotonic() - written[0] >= 1.0:
            _write_json_atomically(instance_file, stats.as_dict())
            written[0] = time.monotonic()

    stats = emulation.run_with_progress(settings, count=count, duration_s=duration, batch_size=batch_size,
                                        stop=stop, on_progress=keep_current)
    emulation.print_summary(stats, console)
    for path in (stats_json, instance_file):
        if path is not None:
            _write_json_atomically(path, stats.as_dict())
    if stats.failed:
        raise typer.Exit(1)


@app.command()
def api(
    ctx: typer.Context,
    host: Annotated[Optional[str], typer.Option(help="Bind address (settings: ingest.host).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (settings: ingest.port).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (settings: ingest.workers).")] = None,
    insecure: Annotated[
        Optional[bool], typer.Option("--insecure", help="Allow a non-loopback address without API keys.")
    ] = None,
) -> None:
    """Run the ingest API: HTTP (REST proxy, Kinesis, legacy, native) to Kafka."""
    from pinpipe.ingest.auth import BindRefused
    from pinpipe.ingest.server import serve

    settings = _settings(
        ctx, ingest__host=host, ingest__port=port, ingest__workers=workers, ingest__insecure=insecure
    )
    try:
        serve(settings)
    except BindRefused as error:
        err_console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from error
    except KeyboardInterrupt:
        pass


@app.command()
def sink(
    ctx: typer.Context,
    metrics_port: Annotated[Optional[int], typer.Option(help="Serve Prometheus /metrics on this port.")] = None,
) -> None:
    """Run the lake sink: Kafka topics to raw Parquet in the lake, exactly once, until Ctrl-C."""
    from pinpipe.lake import SinkStopped, run_sink
    from pinpipe.services.resolve import kafka_bootstrap

    settings = _settings(ctx)
    with kafka_bootstrap(settings) as bootstrap:
        try:
            stats = run_sink(settings, bootstrap, metrics_port=metrics_port)
        except SinkStopped as error:
            err_console.print(f"[red]sink stopped:[/] {error}")
            raise typer.Exit(1) from error
    console.print(f"sink wrote {stats.records:,} records in {stats.files:,} files")


@app.command()
def stream(
    ctx: typer.Context,
    trigger_s: Annotated[Optional[float], typer.Option(help="Micro-batch interval (settings: speed.trigger_s).")] = None,
    metrics_port: Annotated[Optional[int], typer.Option(help="Serve Prometheus /metrics on this port.")] = None,
) -> None:
    """Run the stream job: Kafka -> Spark Structured Streaming -> PostgreSQL upserts, until Ctrl-C."""
    import signal
    import threading

    from pinpipe.services.resolve import kafka_bootstrap, postgres_dsn
    from pinpipe.speed import run_stream

    settings = _settings(ctx, speed__trigger_s=trigger_s)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())  # finish the running micro-batch, then stop
    with kafka_bootstrap(settings) as bootstrap, postgres_dsn(settings) as dsn:
        run_stream(settings, bootstrap, dsn, trigger_s=settings.speed.trigger_s, stop_event=stop,
                   metrics_port=metrics_port)


@lake_app.command("ls")
def lake_ls(ctx: typer.Context) -> None:
    """List the raw partitions of the lake with their files and record counts."""
    from pinpipe.lake import lake_root, list_partitions

    settings = _settings(ctx)
    table = RichTable("table", "dt", "files", "records", "bytes", title=f"raw layer of {lake_root(settings)}")
    for info in list_partitions(settings):
        table.add_row(info.table, info.dt, f"{info.files:,}", f"{info.records:,}", f"{info.bytes:,}")
    console.print(table)


@lake_app.command("verify")
def lake_verify(ctx: typer.Context) -> None:
    """Check every topic-partition's offsets in the lake: contiguous, no duplicates, up to the commit."""
    from pinpipe.lake import verify_lake
    from pinpipe.services.resolve import kafka_bootstrap

    settings = _settings(ctx)
    with kafka_bootstrap(settings) as bootstrap:
        report = verify_lake(settings, bootstrap)
    table = RichTable("topic", "partition", "log", "records", "offsets", "committed", "duplicates", "gaps",
                      "problems")  # fmt: skip
    for check in report.checks:
        offsets = f"{check.first_offset}..{check.last_offset}" if check.records else "-"
        table.add_row(check.topic, str(check.partition), str(check.generation), f"{check.records:,}", offsets,
                      str(check.committed),
                      str(check.duplicates), str(check.gaps), "; ".join(check.problems) or "[green]ok[/]")
    console.print(table)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def batch(
    ctx: typer.Context,
    date: Annotated[Optional[str], typer.Option("--date", help="One day, YYYY-MM-DD.")] = None,
    first: Annotated[Optional[str], typer.Option("--from", help="First day of a range, YYYY-MM-DD.")] = None,
    last: Annotated[Optional[str], typer.Option("--to", help="Last day of a range (inclusive).")] = None,
    all_dates: Annotated[bool, typer.Option("--all", help="Every raw partition in the lake.")] = False,
    publish: Annotated[bool, typer.Option(help="Write the answers to PostgreSQL.")] = True,
    origin: Annotated[str, typer.Option(hidden=True, help="Who started the run (pinpipe.batch_run.origin).")] = "cli",
) -> None:
    """Clean the raw lake partitions with Spark, answer the nine questions, check quality, publish."""
    from datetime import date as Date

    from pinpipe.batch import QualityError, date_range, run_batch
    from pinpipe.batch.job import read_answers
    from pinpipe.batch.show import print_answers, print_counts

    chosen = sum(bool(x) for x in (date, first or last, all_dates))
    if chosen != 1 or bool(first) != bool(last):
        err_console.print("[red]error:[/] give exactly one of --date D, --from D --to D, or --all")
        raise typer.Exit(2)
    try:
        dates = (
            None if all_dates
            else [Date.fromisoformat(date)] if date
            else date_range(Date.fromisoformat(first), Date.fromisoformat(last))
        )
    except ValueError as error:
        err_console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from error
    from pinpipe.services.errors import ServiceError

    settings = _settings(ctx)
    try:
        result = run_batch(settings, dates=dates, all_dates=all_dates, publish=publish, origin=origin)
    except QualityError as error:
        err_console.print(f"[red]data-quality checks failed:[/] {error}")
        raise typer.Exit(1) from error
    except ServiceError as error:  # e.g. batch.spark_master = 'embedded' with no cluster running
        err_console.print(f"[red]batch failed:[/] {error}")
        raise typer.Exit(1) from error
    print_counts(result, console)
    print_answers(read_answers(settings), console)


@app.command()
def sql(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help='e.g. "SELECT category, count(*) FROM pin GROUP BY 1"')],
) -> None:
    """Run SQL over the lake's clean tables and answers (DuckDB): views pin, geo, "user", posts, answers."""
    from pinpipe.lakesql import run_sql

    try:
        result = run_sql(_settings(ctx), query)
    except Exception as error:  # DuckDB's own message says what is wrong with the query
        err_console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from error
    table = RichTable(*result.columns)
    for row in result.rows:
        table.add_row(*("" if value is None else str(value) for value in row))
    console.print(table)


# --- the platform: up, status, down, dashboard ---------------------------------------------------


@app.command()
def up(
    ctx: typer.Context,
    emulate: Annotated[
        Optional[float], typer.Option(help="Also run the emulator at this many posts per second.")
    ] = None,
    batch_every: Annotated[
        Optional[str], typer.Option(help="Run the batch job this often (90s, 10m, 1h); default: leave it to Airflow.")
    ] = None,
    stream: Annotated[bool, typer.Option(help="Run the stream job (speed layer, Spark).")] = True,
    duration: Annotated[
        Optional[str], typer.Option(help="Stop cleanly this long after everything is up (90s, 10m); default: run until stopped.")
    ] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Run in the background; `pinpipe down` stops it.")] = False,
    api_port: Annotated[Optional[int], typer.Option(help="Ingest API port (0: a free one) (settings: ingest.port).")] = None,
    dashboard_port: Annotated[
        Optional[int], typer.Option(help="Dashboard port (0: a free one) (settings: up.dashboard.port).")
    ] = None,
    lake_metrics_port: Annotated[Optional[int], typer.Option(help="Lake sink /metrics port (0: free).")] = None,
    stream_metrics_port: Annotated[Optional[int], typer.Option(help="Stream job /metrics port (0: free).")] = None,
    spark_workers: SparkWorkersOption = None,
) -> None:
    """Start the whole platform, health-checked and supervised; Ctrl-C stops it cleanly."""
    import sys

    from pinpipe.platform.up import UpOptions, parse_duration, run_up
    from pinpipe.platform.up import detach as run_detached

    up_overrides: dict[str, Any] = {}
    if lake_metrics_port is not None:
        up_overrides["lake_metrics_port"] = lake_metrics_port
    if stream_metrics_port is not None:
        up_overrides["stream_metrics_port"] = stream_metrics_port
    if dashboard_port is not None:
        up_overrides["dashboard"] = {"port": dashboard_port}
    settings = _settings(ctx, ingest__port=api_port, up=up_overrides or None,
                         batch=_spark_overrides(spark_workers))
    try:
        every = parse_duration(batch_every) if batch_every else None
        duration_s = parse_duration(duration) if duration else None
    except ValueError as error:
        err_console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from error
    if detach:
        argv = [arg for arg in sys.argv[1:] if arg != "--detach"]
        raise typer.Exit(run_detached(argv, settings, console))
    options = UpOptions(emulate_rate=emulate, batch_every_s=every, stream=stream, duration_s=duration_s)
    raise typer.Exit(run_up(settings, options, console))


@app.command()
def status(ctx: typer.Context) -> None:
    """Health, consumer lag and throughput of each component of a running `pinpipe up`."""
    from pinpipe.platform.up import print_status

    raise typer.Exit(print_status(_settings(ctx), console))


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop a `pinpipe up` running in the background (it stops its components in reverse order)."""
    from pinpipe.platform.up import down as stop

    raise typer.Exit(stop(_settings(ctx), console))


@app.command()
def dashboard(
    ctx: typer.Context,
    host: Annotated[Optional[str], typer.Option(help="Bind address (settings: up.dashboard.host).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (settings: up.dashboard.port).")] = None,
) -> None:
    """Serve the dashboard (read-only): live ingest, lag, stream, real-time metrics, answers, quality."""
    from pinpipe.platform.up import recorded_ports
    from pinpipe.serve.dashboard import serve_dashboard
    from pinpipe.serve.dashboard.server import default_metrics_urls
    from pinpipe.services.resolve import postgres_dsn, reader_dsn

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = _settings(ctx, up={"dashboard": overrides} if overrides else None)
    with postgres_dsn(settings) as dsn:
        reader = reader_dsn(settings, dsn)
        if reader is None:
            err_console.print("[yellow]the dashboard logs in as postgres.dsn's role[/] (read-only sessions only);"
                              " set postgres.reader_dsn to a login granted pinpipe_readonly")
        try:
            serve_dashboard(settings, reader or dsn, default_metrics_urls(settings, recorded_ports(settings)))
        except KeyboardInterrupt:
            pass


@app.command()
def demo(
    ctx: typer.Context,
    duration: Annotated[str, typer.Option(help="How long the emulator posts (90s, 2m).")] = "60s",
    rate: Annotated[float, typer.Option(help="Posts per second (each is a pin, geo and user record).")] = 50.0,
    batch: Annotated[bool, typer.Option(help="Run the batch job (Spark) after the run.")] = True,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="After the summary, keep everything up for the dashboard until Ctrl-C.")
    ] = False,
    dashboard_port: Annotated[
        Optional[int], typer.Option(help="Dashboard port (default: up.dashboard.port, or a free one if that is taken).")
    ] = None,
    spark_workers: SparkWorkersOption = None,
) -> None:
    """`pinpipe up` with the emulator for a bounded run, then the batch job, then a checked summary."""
    from pinpipe.platform.demo import run_demo
    from pinpipe.platform.up import parse_duration

    try:
        duration_s = parse_duration(duration)
    except ValueError as error:
        err_console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from error
    settings = _settings(ctx, up={"dashboard": {"port": dashboard_port}} if dashboard_port is not None else None,
                         batch=_spark_overrides(spark_workers))
    raise typer.Exit(run_demo(settings, rate=rate, duration_s=duration_s, console=console, batch=batch,
                              keep_running=keep_running))


if __name__ == "__main__":  # pragma: no cover
    app()
