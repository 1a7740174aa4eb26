"""Runs the emulator from settings, with a progress bar and a summary table."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from pinpipe.config import Settings
from pinpipe.events import DatetimeStyle
from pinpipe.source.emulator import Emulator, EmulatorPlan, EmulatorStats
from pinpipe.source.tables import SourceTables
from pinpipe.source.wire import WireFormat


def source_tables(settings: Settings) -> SourceTables:
    """The rows to post: read from ``source.dsn`` when set, else generated from the seed."""
    if settings.source.dsn is not None:
        from pinpipe.source.database import read_tables

        return read_tables(settings.source.dsn.get_secret_value())
    from pinpipe.source.generator import generate_tables

    return generate_tables(settings.source.seed, settings.source.rows)


def plan_from_settings(
    settings: Settings, *, count: int | None, duration_s: float | None, batch_size: int = 1
) -> EmulatorPlan:
    """The emulator's plan from the ``emulator`` settings and the run's bounds."""
    emulator = settings.emulator
    return EmulatorPlan(
        base_url=emulator.base_url,
        wire_format=WireFormat(emulator.wire_format),
        user_id=emulator.user_id,
        datetime_style=DatetimeStyle(emulator.datetime_style),
        rate=emulator.rate,
        count=count,
        duration_s=duration_s,
        concurrency=emulator.concurrency,
        max_retries=emulator.max_retries,
        seed=settings.source.seed,
        batch_size=batch_size,
    )


def run_with_progress(
    settings: Settings,
    *,
    count: int | None,
    duration_s: float | None,
    batch_size: int = 1,
    tables: SourceTables | None = None,
    console: Console | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[EmulatorStats], None] | None = None,
) -> EmulatorStats:
    """Run one emulation with a Rich progress bar (records sent of records planned).

    ``stop`` ends it early (the requests in flight finish and are counted); ``on_progress``
    is called with the counts after each request."""
    plan = plan_from_settings(settings, count=count, duration_s=duration_s, batch_size=batch_size)
    tables = tables if tables is not None else source_tables(settings)
    posts = count if count is not None else math.ceil(plan.rate * (duration_s or 0))
    progress = Progress(
        TextColumn("emulating [bold]{task.fields[fmt]}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("records · {task.fields[accepted]} accepted · {task.fields[retried]} retried"),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task("emulate", total=posts * 3, fmt=plan.wire_format.value, accepted=0, retried=0)

        def advance(stats: EmulatorStats) -> None:
            progress.update(task, completed=stats.sent, accepted=stats.accepted, retried=stats.retried)
            if on_progress is not None:
                on_progress(stats)

        stats = Emulator(tables, plan, on_progress=advance, stop=stop).run()
        progress.update(task, completed=stats.sent)
    return stats


BEHIND_WARNING_S = 1.0


def print_summary(stats: EmulatorStats, console: Console) -> None:
    """One table: posts, requests and records sent, accepted, rejected, retried, failed; and a
    warning when the posts could not keep to the rate."""
    table = RichTable("posts", "requests", "sent", "accepted", "rejected", "retried", "failed",
                      title="emulator summary (records)")
    table.add_row(*(f"{value:,}" for value in stats.as_dict().values()))
    console.print(table)
    if stats.behind_s > BEHIND_WARNING_S:
        console.print(
            f"[yellow]the emulator fell up to {stats.behind_s:.1f} s behind its rate: each request "
            "waits for the broker's acknowledgement, so raise --concurrency, or post several "
            "posts per request (--format native --batch-size N)[/]"
        )
