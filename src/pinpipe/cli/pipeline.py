"""The pipeline's stages, one command each, in data-flow order: ``pinpipe api`` (HTTP -> Kafka),
``pinpipe sink`` (Kafka -> the lake), ``pinpipe stream`` (the speed layer), ``pinpipe batch``
(the batch layer); and the looks at what they wrote: ``pinpipe lake ls|verify``, ``pinpipe sql``.

``python -m pinpipe.lake``, ``python -m pinpipe.speed`` and ``python -m pinpipe.batch`` run
these same commands (:func:`pinpipe.cli.run_command`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table as RichTable

from pinpipe.cli.app import (
    LogLevelOption,
    MetricsPortOption,
    app,
    console,
    fail,
    log_to_stderr,
    print_json,
    settings_for,
)

lake_app = typer.Typer(help="The data lake: list partitions, verify exactly-once.", no_args_is_help=True)
app.add_typer(lake_app, name="lake")


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

    settings = settings_for(
        ctx, ingest__host=host, ingest__port=port, ingest__workers=workers, ingest__insecure=insecure
    )
    try:
        serve(settings)
    except BindRefused as error:
        fail(str(error), code=2)
    except KeyboardInterrupt:
        pass


@app.command()
def sink(
    ctx: typer.Context,
    bootstrap: Annotated[
        Optional[str], typer.Option(help="Broker host:port[,...] (settings: broker.bootstrap_servers).")
    ] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Settings: data_dir.")] = None,
    root: Annotated[Optional[str], typer.Option(help="Lake root, a path or s3://bucket/prefix (lake.root).")] = None,
    topic_prefix: Annotated[Optional[str], typer.Option(help="Settings: broker.topic_prefix.")] = None,
    group: Annotated[Optional[str], typer.Option(help="Consumer group (lake.sink_group_id).")] = None,
    rotate_records: Annotated[Optional[int], typer.Option(help="Settings: lake.rotate_records.")] = None,
    rotate_bytes: Annotated[Optional[int], typer.Option(help="Settings: lake.rotate_bytes.")] = None,
    rotate_age_s: Annotated[Optional[float], typer.Option(help="Settings: lake.rotate_age_s.")] = None,
    max_buffer_bytes: Annotated[Optional[int], typer.Option(help="Settings: lake.max_buffer_bytes.")] = None,
    session_timeout_ms: Annotated[Optional[int], typer.Option(help="Settings: lake.session_timeout_ms.")] = None,
    s3_endpoint_url: Annotated[Optional[str], typer.Option(help="Settings: lake.s3_endpoint_url.")] = None,
    metrics_port: MetricsPortOption = None,
    log_level: LogLevelOption = "INFO",
    as_json: Annotated[bool, typer.Option("--json", help="End with the run's stats as one JSON line.")] = False,
) -> None:
    """Run the lake sink: Kafka topics to raw Parquet in the lake, exactly once, until Ctrl-C.

    SIGTERM stops it too, after the files in flight; a terminal error exits 1.
    """
    from pinpipe.lake import SinkStopped, run_sink
    from pinpipe.services.resolve import kafka_bootstrap

    log_to_stderr(log_level)
    settings = settings_for(
        ctx, data_dir=data_dir, broker__bootstrap_servers=bootstrap, broker__topic_prefix=topic_prefix or None,
        lake__root=root, lake__sink_group_id=group, lake__rotate_records=rotate_records,
        lake__rotate_bytes=rotate_bytes, lake__rotate_age_s=rotate_age_s,
        lake__max_buffer_bytes=max_buffer_bytes, lake__session_timeout_ms=session_timeout_ms,
        lake__s3_endpoint_url=s3_endpoint_url,
    )  # fmt: skip
    with kafka_bootstrap(settings) as servers:
        try:
            stats = run_sink(settings, servers, metrics_port=metrics_port)  # SIGTERM/SIGINT: stop
        except SinkStopped as error:
            fail(str(error), prefix="sink stopped")
    if as_json:
        print_json(dataclasses.asdict(stats))
    else:
        console.print(f"sink wrote {stats.records:,} records in {stats.files:,} files")


@app.command()
def stream(
    ctx: typer.Context,
    trigger_s: Annotated[Optional[float], typer.Option(help="Micro-batch interval (settings: speed.trigger_s).")] = None,
    checkpoint_dir: Annotated[
        Optional[str], typer.Option(help="Spark checkpoint directory (settings: speed.checkpoint_dir).")
    ] = None,
    metrics_port: MetricsPortOption = None,
    log_level: LogLevelOption = "INFO",
) -> None:
    """Run the stream job: Kafka -> Spark Structured Streaming -> PostgreSQL upserts, until Ctrl-C.

    SIGTERM stops it too; the running micro-batch finishes first.
    """
    from pinpipe.processes import stop_on_signals
    from pinpipe.services.resolve import kafka_bootstrap, postgres_dsn
    from pinpipe.speed import run_stream

    log_to_stderr(log_level)
    settings = settings_for(ctx, speed__trigger_s=trigger_s, speed__checkpoint_dir=checkpoint_dir)
    with stop_on_signals() as stop, kafka_bootstrap(settings) as bootstrap, postgres_dsn(settings) as dsn:
        run_stream(settings, bootstrap, dsn, stop_event=stop, metrics_port=metrics_port)


@lake_app.command("ls")
def lake_ls(ctx: typer.Context) -> None:
    """List the raw partitions of the lake with their files and record counts."""
    from pinpipe.lake import lake_root, list_partitions

    settings = settings_for(ctx)
    table = RichTable("table", "dt", "files", "records", "bytes", title=f"raw layer of {lake_root(settings)}")
    for info in list_partitions(settings):
        table.add_row(info.table, info.dt, f"{info.files:,}", f"{info.records:,}", f"{info.bytes:,}")
    console.print(table)


@lake_app.command("verify")
def lake_verify(ctx: typer.Context) -> None:
    """Check every topic-partition's offsets in the lake: contiguous, no duplicates, up to the commit."""
    from pinpipe.lake import verify_lake
    from pinpipe.services.resolve import kafka_bootstrap

    settings = settings_for(ctx)
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
    days: Annotated[
        Optional[tuple[str, str]], typer.Option("--range", metavar="FROM TO", help="--from FROM --to TO.")
    ] = None,
    all_dates: Annotated[bool, typer.Option("--all", help="Every raw partition in the lake.")] = False,
    publish: Annotated[bool, typer.Option(help="Write the answers to PostgreSQL.")] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the run's counts as JSON, not the tables.")
    ] = False,
    origin: Annotated[str, typer.Option(hidden=True, help="Who started the run (pinpipe.batch_run.origin).")] = "cli",
) -> None:
    """Clean the raw lake partitions with Spark, answer the nine questions, check quality, publish.

    Exits 1 when the data-quality checks fail.
    """
    from pinpipe.batch import QualityError, run_batch
    from pinpipe.services.errors import ServiceError

    if days is not None:
        if first or last:
            fail("give exactly one of --date D, --from D --to D, or --all", code=2)
        first, last = days
    dates = _chosen_dates(date, first, last, all_dates)
    settings = settings_for(ctx)
    try:
        result = run_batch(settings, dates=dates, all_dates=all_dates, publish=publish, origin=origin)
    except QualityError as error:
        fail(str(error), prefix="")  # it says "data-quality checks failed: ..." itself
    except ServiceError as error:  # e.g. batch.spark_master = 'embedded' with no cluster running
        fail(str(error), prefix="batch failed")
    if as_json:
        typer.echo(result.to_json())
        return
    from pinpipe.batch.job import read_answers
    from pinpipe.batch.show import print_answers, print_counts

    print_counts(result, console)
    print_answers(read_answers(settings), console)


def _chosen_dates(date: str | None, first: str | None, last: str | None, all_dates: bool):
    """The days of ``--date``, ``--from``/``--to`` or ``--all`` (None); exit 2 unless exactly one."""
    from datetime import date as Date

    from pinpipe.batch import date_range

    chosen = sum(bool(x) for x in (date, first or last, all_dates))
    if chosen != 1 or bool(first) != bool(last):
        fail("give exactly one of --date D, --from D --to D, or --all", code=2)
    try:
        if all_dates:
            return None
        if date:
            return [Date.fromisoformat(date)]
        return date_range(Date.fromisoformat(first), Date.fromisoformat(last))
    except ValueError as error:
        fail(str(error), code=2)


@app.command()
def sql(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help='e.g. "SELECT category, count(*) FROM pin GROUP BY 1"')],
) -> None:
    """Run SQL over the lake's clean tables and answers (DuckDB): views pin, geo, "user", posts, answers."""
    from pinpipe.lakesql import run_sql

    try:
        result = run_sql(settings_for(ctx), query)
    except Exception as error:  # DuckDB's own message says what is wrong with the query
        fail(str(error))
    table = RichTable(*result.columns)
    for row in result.rows:
        table.add_row(*("" if value is None else str(value) for value in row))
    console.print(table)
