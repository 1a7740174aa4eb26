"""``pinpipe up --detach``, ``pinpipe status`` and ``pinpipe down`` from another terminal: they
read the run's record (:mod:`pinpipe.platform.state`) and ask each component itself."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table as RichTable

from pinpipe.config import Settings
from pinpipe.platform.broker_watch import lost_records
from pinpipe.platform.drain import CONSUMER_DRAIN_S
from pinpipe.platform.run import print_losses, stop_services
from pinpipe.platform.state import (
    LAST_RUN_FILE,
    clear_state,
    left_behind,
    own_children,
    read_state,
    recorded_state,
)
from pinpipe.processes import end_process_group

if TYPE_CHECKING:
    pass



def detach(argv: list[str], settings: Settings, console: Console, timeout_s: float = 300.0) -> int:
    """Run ``pinpipe up`` (``argv`` without ``--detach``) in the background; wait until it is
    running (or has failed), then print the status table."""
    if not may_start(settings, console):
        return 1
    log = settings.data_dir / "logs" / "up.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pinpipe.cli", *argv], stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read_state(settings)
        if state is not None and state.get("pid") == process.pid and state.get("phase") == "running":
            console.print(f"pinpipe up running in the background (pid {process.pid}); log: {log}")
            # Up is running: that is what this answers. The table may still show the stream job
            # not healthy while its first query warms up (`pinpipe status` later says more).
            print_status(settings, console)
            return 0
        if process.poll() is not None:
            console.print(f"[red]pinpipe up exited with code {process.returncode}[/]; see {log}")
            return 1
        time.sleep(0.3)
    console.print(f"[red]pinpipe up not running after {timeout_s:.0f} s[/]; see {log}")
    return 1


def status_rows(settings: Settings, sample_s: float = 1.0) -> list[dict] | None:
    """Health, lag and throughput of each component of the running ``up`` (None if none)."""
    from pinpipe.processes import pid_is_alive
    from pinpipe.serve.dashboard.scrape import http_ok, scrape, summarize
    from pinpipe.services.broker import broker_is_healthy
    from pinpipe.speed.health import stream_health

    state = read_state(settings)
    if state is None:
        return None
    names = {"api": "ingest", "lake-sink": "lake-sink", "stream": "stream"}
    components = state.get("components", [])
    first = {c["name"]: scrape(c["metrics_url"]) for c in components if c.get("metrics_url") and c["name"] in names}
    time.sleep(sample_s)
    rows = []
    for c in components:
        row = {"name": c["name"], "address": c["address"], "pid": c.get("pid"), "note": c.get("note", ""),
               "healthy": None, "lag": None, "per_s": None}
        if c.get("pid"):
            row["healthy"] = pid_is_alive(int(c["pid"]))
        if c.get("health_url"):
            row["healthy"] = bool(row["healthy"] is not False and http_ok(c["health_url"]))
        if c["name"] == "broker" and row["healthy"]:  # alive is not enough: does it answer?
            row["healthy"] = broker_is_healthy(settings.broker.client_config(c["address"]), timeout=2.0)
            row["note"] = row["note"] if row["healthy"] else "not answering metadata requests"
        if c["name"] == "postgres":  # its pid changes when it is restarted: ask it instead
            row["healthy"], pid = _postgres_answers(settings)
            row["pid"] = pid or row["pid"]
            row["note"] = row["note"] if row["healthy"] else "not answering"
        if c["name"] == "stream" and row["healthy"] and c.get("metrics_url"):
            # Alive is not enough: its query must have committed a micro-batch recently.
            verdict = stream_health(c["metrics_url"])
            row["healthy"] = verdict.healthy
            row["note"] = row["note"] if verdict.healthy else verdict.reason
        if c["name"] == "lake-sink" and row["healthy"] and c["name"] in first:
            samples = {name: value for name, _, value in first[c["name"]].samples}
            if samples.get("pinpipe_lake_broker_up") == 0:  # it can neither fetch nor commit
                row["healthy"], row["note"] = False, "cannot reach the broker"
        if c["name"] in first:
            before, after = summarize(names[c["name"]], first[c["name"]]), summarize(names[c["name"]], scrape(c["metrics_url"]))
            row["lag"] = after.get("lag")
            if before.get("records_total") is not None and after.get("records_total") is not None:
                row["per_s"] = max(0.0, (after["records_total"] - before["records_total"]) / sample_s)
        rows.append(row)
    return rows


def _postgres_answers(settings: Settings) -> tuple[bool, int | None]:
    """Whether PostgreSQL answers a query, and the embedded server's current pid (None when
    external or not running)."""
    from pinpipe.services.pg_common import postgres_is_healthy
    from pinpipe.services.resolve import running_postgres

    running = running_postgres(settings)
    if running is None:
        return False, None
    dsn, pid = running
    return postgres_is_healthy(dsn, timeout=2.0), pid


def print_status(settings: Settings, console: Console) -> int:
    rows = status_rows(settings)
    if rows is None:
        console.print("pinpipe up is not running")
        return 1
    table = RichTable("component", "health", "pid", "lag", "records/s", "address", "note")
    for r in rows:
        health = "-" if r["healthy"] is None else "[green]healthy[/]" if r["healthy"] else "[red]down[/]"
        table.add_row(r["name"], health, str(r["pid"] or "-"),
                      "-" if r["lag"] is None else f"{r['lag']:,.0f}",
                      "-" if r["per_s"] is None else f"{r['per_s']:,.1f}", r["address"], r["note"])  # fmt: skip
    console.print(table)
    print_losses(console, [asdict(lost) for lost in lost_records(settings)])
    return 0 if all(r["healthy"] is not False for r in rows) else 1


def may_start(settings: Settings, console: Console) -> bool:
    """No other up runs, and none that was killed left its components running (their ports,
    their consumer group); else say why and what to do."""
    existing = read_state(settings)
    if existing is not None:
        console.print(f"[red]pinpipe up is already running[/] (pid {existing['pid']}); `pinpipe down` stops it")
        return False
    left = left_behind(settings)
    if left:
        console.print(f"[red]a pinpipe up that was killed left {', '.join(left)} running[/]; "
                      "`pinpipe down` stops them")
        return False
    return True


def down(settings: Settings, console: Console) -> int:
    """Stop a ``pinpipe up`` running in the background (SIGTERM; it stops its components).

    An up that was killed (SIGKILL, a crash) could not stop what it started: down then stops
    those itself, from up's record, and only those. A broker or PostgreSQL that was running
    before up (``pinpipe services up``, or an earlier run) is someone else's and stays.
    """
    from pinpipe.processes import pid_is_alive, terminate_pid

    state = recorded_state(settings)
    if state is None:
        console.print("pinpipe up is not running")
        return 0
    pid = int(state["pid"])
    components = state.get("components", [])
    killed = not pid_is_alive(pid)
    if not killed:
        console.print(f"stopping pinpipe up (pid {pid}); it stops its components in reverse order")
        budget = settings.up.stop_timeout_s * (len(components) + 1) + CONSUMER_DRAIN_S
        try:
            terminate_pid(pid, timeout=budget)
        except TimeoutError:
            console.print(f"[red]pid {pid} did not exit[/]")
            return 1
    else:
        console.print(f"[yellow]pinpipe up (pid {pid}) is gone[/]: stopping what it left running")
    # An up killed before it could stop its children leaves them behind: stop them too.
    for component in reversed(own_children(state)):
        console.print(f"stopping {component['name']} (pid {component['pid']})")
        end_process_group(int(component["pid"]), settings.up.stop_timeout_s)
    if killed:  # else up stopped the services it started itself
        stop_services(settings, state.get("started_services", []),
                      lambda name, message: console.print(f"{name} {message}"))
    clear_state(settings)
    try:
        last = json.loads((settings.run_dir / LAST_RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        last = {}
    print_losses(console, last.get("lost", []))
    if last.get("kafka"):
        kafka = last["kafka"]
        console.print(f"Kafka holds {sum(kafka.values()):,} records: "
                      + ", ".join(f"{topic} {n:,}" for topic, n in sorted(kafka.items())))
    console.print("[green]stopped[/]")
    return 0
