"""The root of the ``pinpipe`` command: the Typer app, its ``--config`` option, the settings
every command starts from, and what the command modules share (consoles, options, logging).

Heavy stacks are imported inside the commands, never here.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console

app = typer.Typer(
    name="pinpipe",
    help="A Lambda-architecture pipeline for Pinterest-style post events.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

console = Console()
err_console = Console(stderr=True)

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

MetricsPortOption = Annotated[
    Optional[int], typer.Option(help="Serve Prometheus /metrics on 127.0.0.1:PORT.")
]

LogLevelOption = Annotated[str, typer.Option(help="Log level of the job's lines on stderr.")]


def spark_worker_flags(workers: int | None) -> dict[str, Any]:
    """``--spark-workers N``: N workers, and the jobs on them (0: no cluster, jobs as configured)."""
    if workers is None:
        return {}
    if workers == 0:
        return {"batch__spark_workers": 0}
    return {"batch__spark_workers": workers, "batch__spark_master": "embedded"}


@app.callback()
def main(ctx: typer.Context, config: ConfigOption = None) -> None:
    """pinpipe: HTTP -> Kafka -> lake (batch, Spark) and PostgreSQL (speed, streaming)."""
    ctx.obj = {"config": config}


def settings_for(ctx: typer.Context, **flags: Any):
    """Effective settings: file < env < the command's flags, named like the environment
    (``speed__trigger_s``; those left unset, None, override nothing). Exit 2 on a bad file."""
    from pinpipe.config import ConfigFileError, flag_overrides, load_settings

    try:
        return load_settings(ctx.obj.get("config") if ctx.obj else None, **flag_overrides(**flags))
    except ConfigFileError as error:
        fail(str(error), code=2)


def fail(message: str, code: int = 1, prefix: str = "error") -> NoReturn:
    """Print ``prefix: message`` (red prefix) on stderr and end the command with ``code``."""
    from rich.markup import escape

    err_console.print(f"[red]{prefix}:[/] {escape(message)}" if prefix else f"[red]{escape(message)}[/]")
    raise typer.Exit(code)


def log_to_stderr(level: str) -> None:
    """The long-running jobs (sink, stream) log their progress as lines on stderr."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``2h``, ``1d`` -> seconds (ValueError for anything else)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (examples: 90s, 10m, 2h)")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def print_json(document: Any) -> None:
    """One JSON line on stdout, for the scripts and job runners that read a command's result."""
    typer.echo(json.dumps(document))


@app.command()
def config(ctx: typer.Context) -> None:
    """Print the effective settings (secrets masked) as JSON."""
    from pinpipe.config import masked_dump

    console.print_json(json.dumps(masked_dump(settings_for(ctx))))


def run_command(command: str, *fixed: str, argv: list[str] | None = None) -> int:
    """``pinpipe <command> <fixed...> <argv>`` (``argv``: this process's arguments) and its exit
    code: how ``python -m pinpipe.<package>`` runs the same command as the CLI.

    ``--config FILE`` anywhere in ``argv`` goes before the command, where ``pinpipe`` takes it.
    """
    rest = list(sys.argv[1:] if argv is None else argv)
    hoisted: list[str] = []
    for index, arg in enumerate(rest):
        if arg in ("--config", "-c") and index + 1 < len(rest):
            hoisted = rest[index:index + 2]
            del rest[index:index + 2]
            break
        if arg.startswith("--config="):
            hoisted = [rest.pop(index)]
            break
    try:
        app([*hoisted, command, *fixed, *rest], prog_name="pinpipe")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0
