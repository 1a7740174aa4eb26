"""The platform: ``pinpipe up`` (everything, supervised), ``status``, ``down``, ``dashboard`` and
``demo`` (a bounded, checked run)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from pinpipe.cli.app import (
    SparkWorkersOption,
    app,
    console,
    err_console,
    fail,
    parse_duration,
    settings_for,
    spark_worker_flags,
)


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

    from pinpipe.platform.control import detach as run_detached
    from pinpipe.platform.up import UpOptions, run_up

    settings = settings_for(ctx, ingest__port=api_port, up__lake_metrics_port=lake_metrics_port,
                            up__stream_metrics_port=stream_metrics_port, up__dashboard__port=dashboard_port,
                            **spark_worker_flags(spark_workers))
    try:
        every = parse_duration(batch_every) if batch_every else None
        duration_s = parse_duration(duration) if duration else None
    except ValueError as error:
        fail(str(error), code=2)
    if detach:
        argv = [arg for arg in sys.argv[1:] if arg != "--detach"]
        raise typer.Exit(run_detached(argv, settings, console))
    options = UpOptions(emulate_rate=emulate, batch_every_s=every, stream=stream, duration_s=duration_s)
    raise typer.Exit(run_up(settings, options, console))


@app.command()
def status(ctx: typer.Context) -> None:
    """Health, consumer lag and throughput of each component of a running `pinpipe up`."""
    from pinpipe.platform.control import print_status

    raise typer.Exit(print_status(settings_for(ctx), console))


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop a `pinpipe up` running in the background (it stops its components in reverse order)."""
    from pinpipe.platform.control import down as stop

    raise typer.Exit(stop(settings_for(ctx), console))


@app.command()
def dashboard(
    ctx: typer.Context,
    host: Annotated[Optional[str], typer.Option(help="Bind address (settings: up.dashboard.host).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (settings: up.dashboard.port).")] = None,
) -> None:
    """Serve the dashboard (read-only): live ingest, lag, stream, real-time metrics, answers, quality."""
    from pinpipe.platform.state import recorded_ports
    from pinpipe.serve.dashboard import serve_dashboard
    from pinpipe.serve.dashboard.server import default_metrics_urls
    from pinpipe.services.resolve import postgres_dsn, reader_dsn

    settings = settings_for(ctx, up__dashboard__host=host, up__dashboard__port=port)
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

    try:
        duration_s = parse_duration(duration)
    except ValueError as error:
        fail(str(error), code=2)
    settings = settings_for(ctx, up__dashboard__port=dashboard_port, **spark_worker_flags(spark_workers))
    raise typer.Exit(run_demo(settings, rate=rate, duration_s=duration_s, console=console, batch=batch,
                              keep_running=keep_running))


