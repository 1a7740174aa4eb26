"""One run of ``pinpipe up``: its options, its components, its state as it goes, and what it
prints (the table, the events, the losses); starting and stopping the services it needs."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table as RichTable

from pinpipe.config import Settings
from pinpipe.platform.broker_watch import BrokerWatch
from pinpipe.platform.state import STATE_FILE, write_json
from pinpipe.platform.supervisor import (
    Event,
    Supervisor,
)

if TYPE_CHECKING:
    from pinpipe.services.status import ServiceStatus



@dataclass
class UpOptions:
    """What ``pinpipe up`` runs besides the API, the lake sink and the dashboard, and for how long."""

    emulate_rate: float | None = None
    batch_every_s: float | None = None
    stream: bool = True
    duration_s: float | None = None
    """Stop, as on SIGTERM (emulator first, drain, then the rest), this long after every component
    is healthy; the emulator then posts for exactly this long. None: run until stopped."""


@dataclass
class Component:
    name: str
    address: str
    metrics_url: str | None = None
    health_url: str | None = None
    pid: int | None = None
    note: str = ""


@dataclass
class UpRun:
    settings: Settings
    options: UpOptions
    console: Console
    stop: threading.Event = field(default_factory=threading.Event)
    components: list[Component] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    started_services: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)  # every service's name, started now or not
    supervisor: Supervisor | None = None
    broker_watch: BrokerWatch | None = None  # the embedded broker, restarted when it dies
    batch_process: subprocess.Popen | None = None
    next_batch_at: float | None = None
    dsn: str = ""
    bootstrap: str = ""
    kafka_records: dict[str, int] = field(default_factory=dict)  # per topic, when drained
    reader_dsn: str | None = None  # the dashboard's login: SELECT only (None: dsn, read-only sessions)
    pg_started_at: object = None  # PostgreSQL's clock when up started (stream progress since)
    running_since: float | None = None  # monotonic time every component was healthy
    stopped_by: str = "signal"  # or "duration", "gave up", "failed to start" (in up-last-run.json)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def event(self, name: str, message: str, *, failure: bool = False) -> None:
        """Print an event of the run (:class:`~pinpipe.platform.supervisor.Event`), red when a
        failure."""
        stamp = time.strftime("%H:%M:%S")
        colour = "red" if failure else "cyan"
        self.console.print(f"[dim]{stamp}[/] [{colour}]{name}[/] {message}")


def save_state(run: UpRun, phase: str) -> None:
    # up.json is up's only record: a services.state record named "up" would be this very
    # file, and a reader between two writes would see it without its phase.
    settings = run.settings
    write_json(settings.run_dir / STATE_FILE, {
        "pid": os.getpid(),
        "phase": phase,
        "started_at": run.started_at,
        "ports": run.ports,
        "started_services": run.started_services,
        "services": run.services,
        "batch_every_s": run.options.batch_every_s,
        "components": [vars(c) for c in run.components],
    })  # fmt: skip


def print_table(run: UpRun) -> None:
    table = RichTable("component", "pid", "address", "note", title="pinpipe is up")
    for c in run.components:
        table.add_row(c.name, str(c.pid or "-"), c.address, c.note)
    run.console.print(table)


def print_losses(console: Console, lost: list[dict]) -> None:
    """Say out loud what a broker that came back empty took with it (from the lake's ledger)."""
    if not lost:
        return
    total = sum(entry["end"] - entry["first"] for entry in lost)
    ranges = "; ".join(f"{e['topic']}[{e['partition']}] {e['first']}..{e['end'] - 1} (log {e['generation']})"
                       for e in lost)  # fmt: skip
    console.print(f"[bold red]LOST[/] {total:,} acknowledged records never reached the lake "
                  f"(the broker came back empty): {ranges}")  # fmt: skip


def start_services(settings: Settings, event: Event) -> tuple[list[ServiceStatus], list[str]]:
    """The broker and PostgreSQL, started unless configured external or already running
    (:func:`pinpipe.services.lifecycle.services_up`). Returns their statuses and the names of the
    embedded ones started now: those are the caller's to stop (:func:`stop_services`). When
    one fails, those started here are stopped again (``event`` is told) before it raises."""
    from pinpipe.services.lifecycle import services_up

    statuses = services_up(settings, event)
    return statuses, [s.name for s in statuses if s.started_now]


def stop_services(settings: Settings, names: list[str], event: Event) -> None:
    """Stop the embedded services ``names`` (as returned by :func:`start_services`)."""
    from pinpipe.services.lifecycle import stop_embedded

    stop_embedded(settings, names, event)


def report_failure(console: Console, settings: Settings, what: str, error: BaseException) -> None:
    """One line saying what failed; the traceback of anything not a service error goes to
    ``logs/<what>-error.log`` rather than the terminal."""
    import traceback

    from pinpipe.services.errors import ServiceError

    first, _, rest = str(error).partition("\n")
    console.print(f"[bold red]{what} failed:[/] {first or type(error).__name__}")
    if isinstance(error, ServiceError):
        if rest:
            console.print(f"[dim]{rest}[/]")
        return
    log = settings.data_dir / "logs" / f"{what.replace(' ', '-')}-error.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"--- {datetime.now(UTC).isoformat(timespec='seconds')}\n")
        out.write("".join(traceback.format_exception(error)))
    console.print(f"[dim]({type(error).__name__}; traceback in {log})[/]")
