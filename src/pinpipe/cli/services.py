"""``pinpipe services ...`` (the embedded broker, PostgreSQL and Spark cluster) and the
read-only looks inside the broker: ``pinpipe topics``, ``pinpipe tail``."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table as RichTable

from pinpipe.cli.app import (
    SparkWorkersOption,
    app,
    console,
    err_console,
    fail,
    settings_for,
    spark_worker_flags,
)

services_app = typer.Typer(help="Embedded broker, PostgreSQL and Spark cluster: up, down, status, clean.", no_args_is_help=True)
app.add_typer(services_app, name="services")


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
    from pinpipe.services.lifecycle import services_up as up

    interrupted = []

    def interrupt(signum: int, frame: object) -> None:
        interrupted.append(signum)  # inside a C callback the KeyboardInterrupt becomes a SystemError
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    try:
        statuses = up(settings_for(ctx, **spark_worker_flags(spark_workers)))
    except ServiceError as error:  # what this command started is stopped again
        fail(str(error), prefix="services up failed")
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
    from pinpipe.services.lifecycle import services_down as down

    _print_statuses(down(settings_for(ctx)))


@services_app.command("clean")
def services_clean(ctx: typer.Context) -> None:
    """Stop the embedded services and remove what pinpipe keeps for them outside data_dir
    (`make clean` runs this; it then removes data_dir)."""
    from pinpipe.services.lifecycle import services_clean as clean

    for path in clean(settings_for(ctx)):
        console.print(f"removed {path}")


@services_app.command("status")
def services_status(ctx: typer.Context) -> None:
    """Show each service, its address and its health."""
    from pinpipe.services.lifecycle import services_status as status

    statuses = status(settings_for(ctx))
    _print_statuses(statuses)
    if not all(status.healthy for status in statuses):
        raise typer.Exit(1)


# --- looking inside the broker's topics -------------------------------------------------------


def _inspected_broker(ctx: typer.Context) -> dict[str, str]:
    """Client config of the broker there is (configured or running); exit 1 if there is none."""
    from pinpipe.services.resolve import existing_kafka_bootstrap

    settings = settings_for(ctx)
    bootstrap = existing_kafka_bootstrap(settings)
    if bootstrap is None:
        fail("no broker to look at: none is configured (broker.bootstrap_servers)"
             " and no embedded broker is running (`pinpipe services up` or `pinpipe up`)")
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
        fail(str(error))
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
        fail(str(error))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a follow ends
    except BrokenPipeError:  # `pinpipe tail ... | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


