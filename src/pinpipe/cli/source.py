"""``pinpipe source ...`` (the emulated source tables) and ``pinpipe emulate`` (the users)."""

from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from pinpipe.cli.app import app, console, settings_for

source_app = typer.Typer(help="The emulated source tables: export, load into SQL.", no_args_is_help=True)
app.add_typer(source_app, name="source")


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

    settings = settings_for(ctx, source__seed=seed, source__rows=rows)
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

    settings = settings_for(ctx, source__seed=seed, source__rows=rows, source__dsn=dsn)
    tables = generate_tables(settings.source.seed, settings.source.rows)
    target = settings.source.dsn.get_secret_value() if settings.source.dsn else None
    if target is None:
        with postgres_dsn(settings) as embedded:
            counts = load_tables(tables, embedded)
    else:
        counts = load_tables(tables, target)
    for table, count in counts.items():
        console.print(f"{SOURCE_TABLE_NAMES[table]}: {count:,} rows")


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
    import time

    from pinpipe.processes import stop_on_signals
    from pinpipe.source import emulation

    settings = settings_for(
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
    instance_file = stats_dir / f"{os.getpid()}.json" if stats_dir is not None else None
    written = [0.0]

    def keep_current(stats) -> None:  # a killed emulator loses at most a second of counts
        if instance_file is not None and time.monotonic() - written[0] >= 1.0:
            _write_json_atomically(instance_file, stats.as_dict())
            written[0] = time.monotonic()

    # Until the counts are written: the requests in flight finish and count, then the summary.
    with stop_on_signals() as stop:
        stats = emulation.run_with_progress(settings, count=count, duration_s=duration,
                                            batch_size=batch_size, stop=stop, on_progress=keep_current)
        emulation.print_summary(stats, console)
        for path in (stats_json, instance_file):
            if path is not None:
                _write_json_atomically(path, stats.as_dict())
    if stats.failed:
        raise typer.Exit(1)
