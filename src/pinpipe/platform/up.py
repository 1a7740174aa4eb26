"""``pinpipe up`` / ``status`` / ``down``: the whole platform from one command.

``up`` starts, in order and health-checked, everything not configured as external: broker and
PostgreSQL (:func:`pinpipe.services.lifecycle.services_up`), the schema migrations, the ingest
API, the lake sink, the stream job, the dashboard, optionally the emulator; it runs the batch
job every ``--batch-every`` (or leaves it to Airflow), supervises the processes
(:mod:`pinpipe.platform.supervisor`) and the embedded broker (:mod:`pinpipe.platform.broker_watch`) and, on Ctrl-C or SIGTERM (or when ``--duration`` is up), stops
everything in reverse order. Before stopping the consumers it lets them drain what the API
accepted (a memory-storage broker keeps nothing across restarts), and it records the final figures
(the API's, and the emulator's when it finished its bounded run) in ``<run_dir>/up-last-run.json``.

What is running is recorded in ``<run_dir>/up.json`` (pids, addresses, ports; no secrets), so
``pinpipe status`` and ``pinpipe down`` work from another terminal. Ports set to 0 are chosen
free by ``up`` and recorded there.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from pinpipe.config import Settings
from pinpipe.platform.broker_watch import BrokerWatch, lost_records
from pinpipe.platform.control import may_start
from pinpipe.platform.drain import (
    checkpoint_is_empty,
    drain,
    emulator_stats,
    wait_for_first_micro_batch,
)
from pinpipe.platform.run import (
    Component,
    UpOptions,
    UpRun,
    print_losses,
    print_table,
    report_failure,
    save_state,
    start_services,
    stop_services,
)
from pinpipe.platform.schedule import batch_tick, duration_tick
from pinpipe.platform.specs import child_env, choose_ports, specs
from pinpipe.platform.state import EMULATOR_STATS_DIR, LAST_RUN_FILE, clear_state, write_json
from pinpipe.platform.supervisor import (
    GaveUp,
    HealthTimeout,
    RestartPolicy,
    Supervisor,
)
from pinpipe.processes import end_process_group, stop_on_signals

if TYPE_CHECKING:
    pass

INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C before it finished its work


def run_up(settings: Settings, options: UpOptions, console: Console) -> int:
    """Start everything, supervise until SIGINT/SIGTERM (or a component gives up), stop.

    Returns the exit code: 0 after a clean stop, 1 if a component failed to start or gave up.
    """
    from pinpipe.services.resolve import reader_dsn
    from pinpipe.services.state import read_record
    from pinpipe.store.schema import apply_migrations

    if not may_start(settings, console):
        return 1
    run = UpRun(settings, options, console)
    with stop_on_signals(run.stop):  # Ctrl-C and SIGTERM stop the run, in order
        policy = RestartPolicy(settings.up.restart_backoff_s, settings.up.restart_backoff_max_s,
                               settings.up.max_restarts, settings.up.restart_window_s)  # fmt: skip
        run.supervisor = Supervisor(policy, run.event)
        code = 0
        try:
            run.ports = choose_ports(settings)
            save_state(run, "starting")
            console.print("[cyan]services[/] starting broker and PostgreSQL (those not configured external)")
            statuses, run.started_services = start_services(settings, run.event)
            run.services = [status.name for status in statuses]
            for status in statuses:
                record = read_record(settings.run_dir, status.name) if status.mode == "embedded" else None
                run.components.append(Component(status.name, status.address, pid=record.pid if record else None,
                                                note=status.mode))
            if not all(s.healthy for s in statuses):
                console.print("[red]a service is not healthy[/]; see the table")
                print_table(run)
                return 1
            bootstrap = run.bootstrap = next(s.address for s in statuses if s.name == "broker")
            broker = next(c for c in run.components if c.name == "broker")
            if broker.pid is not None:
                run.broker_watch = BrokerWatch(settings, broker.pid, int(bootstrap.rsplit(":", 1)[1]), run.event)
            run.dsn = _resolved_dsn(settings)
            applied = apply_migrations(run.dsn)
            run.reader_dsn = reader_dsn(settings, run.dsn)
            console.print(f"[cyan]migrations[/] schema pinpipe up to date ({len(applied)} applied now)")
            run.pg_started_at = _pg_now(run.dsn)
            # A new log (memory storage, or a durable one created now) starts its offsets at 0.
            if any(status.name == "broker" and status.started_now and status.new_log for status in statuses):
                _archive_stale_state(run)
            save_state(run, "starting")
            shutil.rmtree(settings.run_dir / EMULATOR_STATS_DIR, ignore_errors=True)  # only this run's counts
            new_stream_query = options.stream and checkpoint_is_empty(settings)
            for spec, component in specs(run, bootstrap):
                if run.stop.is_set():
                    raise HealthTimeout("interrupted while starting")
                if spec.name == "emulator" and new_stream_query:
                    wait_for_first_micro_batch(run)
                console.print(f"[cyan]{spec.name}[/] starting")
                child = run.supervisor.start(spec, timeout_s=settings.up.health_timeout_s, stop=run.stop)
                component.pid = child.pid
                run.components.append(component)
                save_state(run, "starting")
            if options.batch_every_s:
                run.components.append(Component("batch", f"every {options.batch_every_s:g} s", note="logs/batch.log"))
            else:
                run.components.append(Component("batch", "-", note="not scheduled: `pinpipe batch` or Airflow"))
            save_state(run, "running")
            print_table(run)
            if options.duration_s is not None:
                console.print(f"Runs for {options.duration_s:g} s, then stops; Ctrl-C (or `pinpipe down`) stops it sooner.")
            else:
                console.print("Ctrl-C (or `pinpipe down`) stops everything.")
            env = child_env(settings, bootstrap, run.dsn)
            run.running_since = time.monotonic()

            def tick() -> None:
                duration_tick(run)
                batch_tick(run, env)
                if run.broker_watch is not None and (pid := run.broker_watch.tick()) is not None:
                    for component in run.components:
                        if component.name == "broker":
                            component.pid = pid
                    save_state(run, "running")
                for component in run.components:  # keep restarted pids current for `pinpipe status`
                    child = run.supervisor.children.get(component.name)
                    if child is not None and child.pid != component.pid:
                        component.pid = child.pid
                        save_state(run, "running")

            run.supervisor.watch(run.stop, tick=tick)
        except GaveUp as error:
            console.print(f"[bold red]giving up:[/] {error}")
            run.stopped_by, code = "gave up", 1
        except HealthTimeout as error:
            if run.stop.is_set():
                console.print("[yellow]interrupted while starting[/]")
                code = INTERRUPTED
            else:
                console.print(f"[bold red]failed to start:[/] {error}")
                run.stopped_by, code = "failed to start", 1
        except Exception as error:  # a service that cannot start, a failed migration, a bug
            report_failure(console, settings, "pinpipe up", error)
            run.stopped_by, code = "failed", 1
        finally:
            _shutdown(run)
    return code


def _pg_now(dsn: str) -> object:
    import psycopg

    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def _archive_stale_state(run: UpRun) -> None:
    """A fresh embedded broker (memory storage) starts its offsets again at 0: the local lake's
    raw files, the stream checkpoint and the speed tables of an earlier broker would clash with
    the new log. They are moved to ``<data_dir>/archive/<time>/`` (the speed tables as CSV
    files in ``speed/``, then emptied), never deleted."""
    from pinpipe.speed.job import checkpoint_location
    from pinpipe.store.schema import archive_speed_state

    settings = run.settings
    stale = []
    if settings.lake.root is None:
        stale.append(settings.data_dir / "lake")
    if settings.speed.checkpoint_dir is None:
        stale.append(Path(checkpoint_location(settings)))
    stale = [path for path in stale if path.exists() and any(path.iterdir())]
    target = settings.data_dir / "archive" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    for path in stale:
        target.mkdir(parents=True, exist_ok=True)
        os.replace(path, target / path.name)
    archived = archive_speed_state(run.dsn, target / "speed")
    rows = sum(archived.values())
    moved = [path.name for path in stale] + ([f"speed tables ({rows:,} row{'s' * (rows != 1)})"] if rows else [])
    if moved:
        run.event("up", f"new embedded broker: moved the earlier {', '.join(moved)} to {target}")


def _resolved_dsn(settings: Settings) -> str:
    from pinpipe.services.resolve import running_postgres

    running = running_postgres(settings)
    if running is None:
        raise HealthTimeout("the embedded PostgreSQL is not running")
    return running[0]


def _shutdown(run: UpRun) -> None:
    """Stop in reverse order: source, (drain), stream, dashboard, sink, API, then services."""
    console, supervisor = run.console, run.supervisor
    # Ignore further Ctrl-C while stopping; a second SIGTERM would otherwise interrupt waits.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    console.print("[cyan]up[/] stopping")
    final: dict = {}
    try:
        if run.batch_process is not None:
            if run.batch_process.poll() is None:
                run.event("batch", "stopping the running batch job")
                run.batch_process.send_signal(signal.SIGINT)  # KeyboardInterrupt: recorded as cancelled
                try:
                    run.batch_process.wait(timeout=run.settings.up.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    pass
            # Its Spark JVM ignores SIGINT, and outlives a driver stopped while the JVM starts.
            end_process_group(run.batch_process.pid, run.settings.up.stop_timeout_s)
            run.batch_process.wait()
        if supervisor is not None:
            if "emulator" in supervisor.children:
                supervisor.stop("emulator")
            if "api" in supervisor.children and supervisor.children["api"].alive():
                final = drain(run)
            supervisor.stop_all()
    finally:
        stop_services(run.settings, run.started_services, run.event)
        emulated = emulator_stats(run)
        summary = {
            "stopped_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "stopped_by": run.stopped_by,
            "api": final,
            "kafka": run.kafka_records,
            "emulator": emulated,
            "restarts": {name: c.restart_total for name, c in (supervisor.children.items() if supervisor else [])},
            "lost": [asdict(lost) for lost in lost_records(run.settings)],
        }
        if run.broker_watch is not None:
            summary["restarts"]["broker"] = run.broker_watch.restarts
        write_json(run.settings.run_dir / LAST_RUN_FILE, summary)
        clear_state(run.settings)
        if emulated:
            console.print(f"[cyan]up[/] the emulator sent {emulated.get('sent', 0):,} records "
                          f"({emulated.get('posts', 0):,} posts)")  # fmt: skip
        if final:
            console.print(f"[cyan]up[/] API accepted {final.get('accepted') or 0:,.0f} records, "
                          f"rejected {final.get('rejected') or 0:,.0f}")  # fmt: skip
        print_losses(console, summary["lost"])
        if run.kafka_records:
            console.print(f"[cyan]up[/] Kafka holds {sum(run.kafka_records.values()):,} records: "
                          + ", ".join(f"{t} {n:,}" for t, n in sorted(run.kafka_records.items())))
        console.print("[green]stopped[/]")
