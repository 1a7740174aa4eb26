"""``pinpipe up`` / ``status`` / ``down``: the whole platform from one command.

``up`` starts, in order and health-checked, everything not configured as external: broker and
PostgreSQL (:func:`pinpipe.services.resolve.services_up`), the schema migrations, the ingest
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

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table as RichTable

from pinpipe.config import Settings, client_host
from pinpipe.platform.broker_watch import BrokerWatch, lost_records
from pinpipe.platform.supervisor import (
    Event,
    GaveUp,
    HealthTimeout,
    ProcessSpec,
    RestartPolicy,
    Supervisor,
)
from pinpipe.processes import end_process_group

if TYPE_CHECKING:
    from pinpipe.services.resolve import ServiceStatus

STATE_FILE = "up.json"
LAST_RUN_FILE = "up-last-run.json"
EMULATOR_STATS_DIR = "emulator"  # <run_dir>/emulator/<pid>.json: each emulator process's counts
CONSUMER_DRAIN_S = 60.0
INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C before it finished its work
EMULATOR_GRACE_S = 30.0  # a bounded run waits this long past its end for the emulator's last requests


# --- the run dir --------------------------------------------------------------------------------


def _write_json(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_state(settings: Settings) -> dict | None:
    """The record of a running ``pinpipe up`` (None if none, or if its process is gone)."""
    from pinpipe.processes import pid_is_alive

    state = _recorded_state(settings)
    if state is None or not pid_is_alive(int(state.get("pid", 0))):
        return None
    return state


def _recorded_state(settings: Settings) -> dict | None:
    """up.json as it was last written, whether or not its ``pinpipe up`` still runs."""
    try:
        return json.loads((settings.run_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def recorded_ports(settings: Settings) -> dict[str, int]:
    """Ports of the components of a running ``pinpipe up`` (``ingest``, ``lake-sink``, ...)."""
    state = read_state(settings)
    return {} if state is None else {k: int(v) for k, v in state.get("ports", {}).items()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``2h``, ``1d`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (examples: 90s, 10m, 2h)")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


# --- what up runs -------------------------------------------------------------------------------


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

    def event(self, name: str, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        colour = "red" if any(w in message for w in ("exited", "giving up", "SIGKILL", "LOST")) else "cyan"
        self.console.print(f"[dim]{stamp}[/] [{colour}]{name}[/] {message}")


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def _http_ok(url: str) -> bool:
    from pinpipe.serve.dashboard.scrape import http_ok

    return http_ok(url, timeout_s=1.0)


def _choose_ports(settings: Settings) -> dict[str, int]:
    up = settings.up
    wanted = {
        "ingest": settings.ingest.port,
        "lake-sink": up.lake_metrics_port,
        "stream": up.stream_metrics_port,
        "dashboard": up.dashboard.port,
    }
    return {name: port or free_port() for name, port in wanted.items()}


def _child_env(settings: Settings, bootstrap: str, dsn: str) -> dict[str, str]:
    # Children see the resolved broker and PostgreSQL as "configured", so none of them starts
    # an embedded one of its own. The DSN holds a password: it goes to the environment of our
    # own children only, never to a log or a record.
    from pinpipe.services.spark_cluster import child_spark_env

    return {
        "PINPIPE_DATA_DIR": str(settings.data_dir),
        "PINPIPE_BROKER__BOOTSTRAP_SERVERS": bootstrap,
        "PINPIPE_POSTGRES__DSN": dsn,
        "PYTHONUNBUFFERED": "1",
        **child_spark_env(settings),  # the Spark jobs on the embedded cluster (--spark-workers)
    }


def _specs(run: UpRun, bootstrap: str) -> list[tuple[ProcessSpec, Component]]:
    settings, ports = run.settings, run.ports
    logs = settings.data_dir / "logs"
    env = _child_env(settings, bootstrap, run.dsn)
    stop_s = settings.up.stop_timeout_s
    api_host = settings.ingest.host
    api_url = f"http://{client_host(api_host)}:{ports['ingest']}"
    sink_metrics = f"http://127.0.0.1:{ports['lake-sink']}/metrics"
    stream_metrics = f"http://127.0.0.1:{ports['stream']}/metrics"
    dash = settings.up.dashboard
    dash_url = f"http://{client_host(dash.host)}:{ports['dashboard']}"
    cli = "pinpipe.cli"
    out: list[tuple[ProcessSpec, Component]] = []

    out.append((
        ProcessSpec("api", _python(cli, "api", "--host", api_host, "--port", str(ports["ingest"])),
                    logs / "api.log", env, health=lambda: _http_ok(f"{api_url}/readyz"),
                    address=api_url, stop_timeout_s=stop_s),
        Component("api", api_url, f"{api_url}/metrics", f"{api_url}/readyz"),
    ))  # fmt: skip
    out.append((
        ProcessSpec("lake-sink", _python(cli, "sink", "--metrics-port", str(ports["lake-sink"])),
                    logs / "lake-sink.log", env, health=lambda: _http_ok(sink_metrics),
                    address=sink_metrics, stop_timeout_s=stop_s),
        Component("lake-sink", sink_metrics, sink_metrics, sink_metrics),
    ))  # fmt: skip
    # The dashboard before the stream job: the JVM's start and warm-up then have the CPU to
    # themselves (on 2 cores everything starting at once made the first micro-batch later).
    dash_env = {**env, "PINPIPE_UP__DASHBOARD__METRICS_URLS": json.dumps(
        {"ingest": f"{api_url}/metrics", "lake-sink": sink_metrics, "stream": stream_metrics})}
    if run.reader_dsn is not None:
        dash_env["PINPIPE_POSTGRES__READER_DSN"] = run.reader_dsn
    out.append((
        ProcessSpec("dashboard",
                    _python(cli, "dashboard", "--host", dash.host, "--port", str(ports["dashboard"])),
                    logs / "dashboard.log", dash_env, health=lambda: _http_ok(f"{dash_url}/healthz"),
                    address=dash_url, stop_timeout_s=stop_s),
        Component("dashboard", dash_url, f"{dash_url}/metrics", f"{dash_url}/healthz"),
    ))  # fmt: skip
    if run.options.stream:
        out.append((
            ProcessSpec("stream", _python(cli, "stream", "--metrics-port", str(ports["stream"])),
                        logs / "stream.log", env, health=lambda: _http_ok(stream_metrics),
                        address=stream_metrics, stop_timeout_s=stop_s),
            Component("stream", stream_metrics, stream_metrics, stream_metrics),
        ))  # fmt: skip
    if run.options.emulate_rate:
        # A bounded run's emulator ends by itself and is not restarted then; an endless one is
        # stopped by SIGTERM. Every emulator process keeps its counts in a file of its own, so
        # a restarted one adds to, rather than replaces, what the run sent (_emulator_stats).
        bounded = run.options.duration_s is not None
        argv = _python(cli, "emulate", "--base-url", api_url, "--rate", str(run.options.emulate_rate),
                       "--duration", str(run.options.duration_s if bounded else 365 * 86400),
                       "--stats-dir", str(settings.run_dir / EMULATOR_STATS_DIR))
        emulator_env = dict(env)
        if settings.source.dsn is not None:  # read the rows from that database, as `emulate --source-dsn`
            emulator_env["PINPIPE_SOURCE__DSN"] = settings.source.dsn.get_secret_value()
        out.append((
            ProcessSpec("emulator", argv, logs / "emulator.log", emulator_env, address=f"-> {api_url}",
                        restart=not bounded, stop_timeout_s=10.0),
            Component("emulator", f"{run.options.emulate_rate:g} posts/s -> {api_url}"),
        ))  # fmt: skip
    return out


def _save_state(run: UpRun, phase: str) -> None:
    # up.json is up's only record: a services.state record named "up" would be this very
    # file, and a reader between two writes would see it without its phase.
    settings = run.settings
    _write_json(settings.run_dir / STATE_FILE, {
        "pid": os.getpid(),
        "phase": phase,
        "started_at": run.started_at,
        "ports": run.ports,
        "started_services": run.started_services,
        "services": run.services,
        "batch_every_s": run.options.batch_every_s,
        "components": [vars(c) for c in run.components],
    })  # fmt: skip


def _clear_state(settings: Settings) -> None:
    (settings.run_dir / STATE_FILE).unlink(missing_ok=True)


# --- batch schedule -----------------------------------------------------------------------------


def _batch_tick(run: UpRun, env: dict[str, str]) -> None:
    every = run.options.batch_every_s
    if not every:
        return
    now = time.monotonic()
    if run.batch_process is not None:
        code = run.batch_process.poll()
        if code is None:
            return
        outcome = "succeeded" if code == 0 else f"failed (exit {code})"
        run.event("batch", f"run {outcome}" + ("" if code == 0 else "; see logs/batch.log"))
        run.batch_process = None
        if code != 0:  # killed, it could not record its outcome itself
            _fail_abandoned_runs(run)
        _show_batch(run, None, f"last run {outcome} at {time.strftime('%H:%M:%S')}")
    if run.next_batch_at is None:
        run.next_batch_at = now + every
    if now < run.next_batch_at:
        return
    run.next_batch_at = now + every
    log = run.settings.data_dir / "logs" / "batch.log"
    with open(log, "ab") as out:
        run.batch_process = subprocess.Popen(
            _python("pinpipe.cli", "batch", "--all", "--origin", "up"), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True,
        )
    run.event("batch", f"run started (pid {run.batch_process.pid})")
    _show_batch(run, run.batch_process.pid, f"running since {time.strftime('%H:%M:%S')}")


def _fail_abandoned_runs(run: UpRun) -> None:
    import psycopg

    from pinpipe.store.runs import fail_abandoned_runs

    try:
        with psycopg.connect(run.dsn, autocommit=True, connect_timeout=5) as conn:
            fail_abandoned_runs(conn)
    except Exception as error:  # monitoring: the next run's start records it too
        run.event("batch", f"could not record the failed run: {type(error).__name__}")


def _show_batch(run: UpRun, pid: int | None, note: str) -> None:
    """Record the batch run in progress (its pid) or the last one's outcome, for `pinpipe status`."""
    for component in run.components:
        if component.name == "batch":
            component.pid, component.note = pid, f"{note}; logs/batch.log"
    _save_state(run, "running")


def _duration_tick(run: UpRun) -> None:
    """A bounded run stops once its time is up and the emulator has had its last answers."""
    limit = run.options.duration_s
    if limit is None or run.running_since is None or run.stop.is_set():
        return
    elapsed = time.monotonic() - run.running_since
    if elapsed < limit:
        return
    emulator = run.supervisor.children.get("emulator") if run.supervisor else None
    if emulator is not None and emulator.alive() and elapsed < limit + EMULATOR_GRACE_S:
        return  # its last requests are in flight
    if emulator is not None and emulator.process is not None and emulator.process.poll() is not None:
        run.event("emulator", f"finished (exit {emulator.process.returncode})")
    run.event("up", f"{limit:g} s are up: stopping")
    run.stopped_by = "duration"
    run.stop.set()


# --- draining and the final figures -------------------------------------------------------------


def _api_totals(url: str | None, attempts: int = 5) -> dict:
    """The ingest API's record totals from its /metrics ({} if it cannot be scraped after
    ``attempts``)."""
    from pinpipe.serve.dashboard.scrape import scrape

    if not url:
        return {}
    for attempt in range(attempts):
        result = scrape(url, timeout_s=5.0)
        if result.ok:
            break
        time.sleep(0.5 * (attempt + 1))
    else:
        return {}
    return {
        "accepted": result.total("pinpipe_ingest_records_total", outcome="accepted"),
        "rejected": result.total("pinpipe_ingest_records_total", outcome="rejected"),
        "failed": result.total("pinpipe_ingest_records_total", outcome="failed"),
    }


def _stream_progress_since(dsn: str, since: object) -> tuple[int, int] | None:
    """Micro-batches the stream job committed since ``since`` (PostgreSQL time), and the records
    they wrote; None when PostgreSQL cannot be read."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT count(*), coalesce(sum(records), 0) FROM pinpipe.stream_batch WHERE committed_at >= %s",
                (since,),
            ).fetchone()
    except Exception:
        return None
    return None if row is None else (int(row[0]), int(row[1]))


def _checkpoint_is_empty(settings: Settings) -> bool:
    """True when the stream job starts a new query (no local checkpoint yet)."""
    from pinpipe.speed.job import checkpoint_location

    location = checkpoint_location(settings)
    if "://" in location.removeprefix("file://"):
        return False  # a remote checkpoint: not looked into
    path = Path(location.removeprefix("file://"))
    return not path.exists() or not any(path.iterdir())


def _wait_for_first_micro_batch(run: UpRun) -> None:
    """Before the emulator starts: wait (bounded) until the stream job's new query has committed
    its first micro-batch, so that the stream latency measured is the stream's, not Spark's start.

    A new query runs micro-batch 0 as soon as it runs, even on empty topics. (A resumed one runs
    a micro-batch only for new data: this is called for a new query only.)
    """
    child = run.supervisor.children.get("stream") if run.supervisor else None
    timeout_s = run.settings.up.health_timeout_s
    deadline = time.monotonic() + timeout_s
    with run.console.status("stream: waiting for Spark to run the query's first micro-batch"):
        while time.monotonic() < deadline and not run.stop.is_set() and child is not None and child.alive():
            progress = _stream_progress_since(run.dsn, run.pg_started_at)
            if progress is not None and progress[0] > 0:
                run.event("stream", "query running (first micro-batch committed)")
                return
            time.sleep(0.5)
    if not run.stop.is_set():
        run.event("stream", f"no micro-batch committed within {timeout_s:.0f} s; starting the emulator anyway")


def _drain(run: UpRun) -> dict:
    """After the source stopped: wait (bounded) until the API's figures hold still and the lake
    sink and the stream job have taken every record the topics hold; returns the API's final
    figures, and leaves the records per topic in ``run.kafka_records``.

    "Every record" is measured by offsets, which restarts do not reset: each partition's end
    (found by fetching: ListOffsets is stale on the embedded broker) against the sink's
    position (its ``pinpipe_lake_position`` gauges) and the stream checkpoint's last committed
    batch. Counters would not do: a restarted API or sink counts from zero again.
    """
    from pinpipe.events import Table, all_topics, topic_name
    from pinpipe.services.inspect import list_partitions, partition_ends, partition_starts
    from pinpipe.speed.checkpoint import committed_offsets
    from pinpipe.speed.job import checkpoint_location

    urls = {c.name: c.metrics_url for c in run.components}
    api = _api_totals(urls.get("api"))
    if not api:
        run.event("api", "its /metrics cannot be read: stopping without waiting for the consumers")
        return {}
    settings = run.settings
    client = settings.broker.client_config(run.bootstrap)
    prefix = settings.broker.topic_prefix
    known = list_partitions(client)
    partitions = [(topic, p) for topic in all_topics(prefix) for p in known.get(topic, [])]
    streamed = {topic_name(prefix, table) for table in Table}
    behind: dict[str, int] = {}
    ends: dict[tuple[str, int], int | None] = {}
    deadline = time.monotonic() + CONSUMER_DRAIN_S
    while time.monotonic() < deadline:
        time.sleep(0.5)
        # Requests in flight when the source stopped still complete: read the API again each round.
        latest = _api_totals(urls.get("api"), attempts=1) or api
        settled, api = latest == api, latest
        ends = partition_ends(client, partitions, timeout_s=5.0)
        behind = {}
        if _alive(run, "lake-sink"):
            behind["lake sink"] = _records_behind(ends, _sink_positions(urls.get("lake-sink")))
        if run.options.stream and _alive(run, "stream"):
            done = committed_offsets(checkpoint_location(settings)) or {}
            behind["stream job"] = _records_behind({k: v for k, v in ends.items() if k[0] in streamed}, done)
        if settled and not any(behind.values()):
            break
    else:
        lagging = ", ".join(f"the {name} {n:,} records behind" for name, n in behind.items() if n)
        run.event("up", f"consumers did not catch up within {CONSUMER_DRAIN_S:.0f} s ({lagging or 'the API still answering'});"
                  " stopping anyway: they resume from their offsets next time")  # fmt: skip
    starts = partition_starts(client, partitions)
    run.kafka_records = {}
    for (topic, partition), end in ends.items():
        run.kafka_records[topic] = run.kafka_records.get(topic, 0) + max(0, (end or 0) - starts.get((topic, partition), 0))
    return api


def _alive(run: UpRun, name: str) -> bool:
    child = run.supervisor.children.get(name) if run.supervisor else None
    return child is not None and child.alive()


def _sink_positions(url: str | None) -> dict[tuple[str, int], int]:
    """The lake sink's next offset per partition, from its /metrics ({} if unreadable)."""
    from pinpipe.serve.dashboard.scrape import scrape

    if not url:
        return {}
    result = scrape(url, timeout_s=2.0)
    return {(labels["topic"], int(labels["partition"])): int(value)
            for name, labels, value in result.samples if name == "pinpipe_lake_position"}  # fmt: skip


def _records_behind(ends: dict[tuple[str, int], int | None], positions: dict[tuple[str, int], int]) -> int:
    """Records between a consumer's positions and the partitions' ends (a partition whose end
    is unknown counts as one record behind: it is not known to be done)."""
    return sum(1 if end is None else max(0, end - positions.get(key, 0)) for key, end in ends.items())


# --- up -----------------------------------------------------------------------------------------


def _print_table(run: UpRun) -> None:
    table = RichTable("component", "pid", "address", "note", title="pinpipe is up")
    for c in run.components:
        table.add_row(c.name, str(c.pid or "-"), c.address, c.note)
    run.console.print(table)


def run_up(settings: Settings, options: UpOptions, console: Console) -> int:
    """Start everything, supervise until SIGINT/SIGTERM (or a component gives up), stop.

    Returns the exit code: 0 after a clean stop, 1 if a component failed to start or gave up.
    """
    from pinpipe.services.resolve import reader_dsn
    from pinpipe.services.state import read_record
    from pinpipe.store.schema import apply_migrations

    if not _may_start(settings, console):
        return 1
    run = UpRun(settings, options, console)
    previous = {s: signal.signal(s, lambda *_: run.stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    policy = RestartPolicy(settings.up.restart_backoff_s, settings.up.restart_backoff_max_s,
                           settings.up.max_restarts, settings.up.restart_window_s)  # fmt: skip
    run.supervisor = Supervisor(policy, run.event)
    code = 0
    try:
        run.ports = _choose_ports(settings)
        _save_state(run, "starting")
        console.print("[cyan]services[/] starting broker and PostgreSQL (those not configured external)")
        statuses, run.started_services = start_services(settings, run.event)
        run.services = [status.name for status in statuses]
        for status in statuses:
            record = read_record(settings.run_dir, status.name) if status.mode == "embedded" else None
            run.components.append(Component(status.name, status.address, pid=record.pid if record else None,
                                            note=status.mode))
        if not all(s.healthy for s in statuses):
            console.print("[red]a service is not healthy[/]; see the table")
            _print_table(run)
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
        _save_state(run, "starting")
        shutil.rmtree(settings.run_dir / EMULATOR_STATS_DIR, ignore_errors=True)  # only this run's counts
        new_stream_query = options.stream and _checkpoint_is_empty(settings)
        for spec, component in _specs(run, bootstrap):
            if run.stop.is_set():
                raise HealthTimeout("interrupted while starting")
            if spec.name == "emulator" and new_stream_query:
                _wait_for_first_micro_batch(run)
            console.print(f"[cyan]{spec.name}[/] starting")
            child = run.supervisor.start(spec, timeout_s=settings.up.health_timeout_s, stop=run.stop)
            component.pid = child.pid
            run.components.append(component)
            _save_state(run, "starting")
        if options.batch_every_s:
            run.components.append(Component("batch", f"every {options.batch_every_s:g} s", note="logs/batch.log"))
        else:
            run.components.append(Component("batch", "-", note="not scheduled: `pinpipe batch` or Airflow"))
        _save_state(run, "running")
        _print_table(run)
        if options.duration_s is not None:
            console.print(f"Runs for {options.duration_s:g} s, then stops; Ctrl-C (or `pinpipe down`) stops it sooner.")
        else:
            console.print("Ctrl-C (or `pinpipe down`) stops everything.")
        env = _child_env(settings, bootstrap, run.dsn)
        run.running_since = time.monotonic()

        def tick() -> None:
            _duration_tick(run)
            _batch_tick(run, env)
            if run.broker_watch is not None and (pid := run.broker_watch.tick()) is not None:
                for component in run.components:
                    if component.name == "broker":
                        component.pid = pid
                _save_state(run, "running")
            for component in run.components:  # keep restarted pids current for `pinpipe status`
                child = run.supervisor.children.get(component.name)
                if child is not None and child.pid != component.pid:
                    component.pid = child.pid
                    _save_state(run, "running")

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
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code


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


def start_services(settings: Settings, event: Event) -> tuple[list[ServiceStatus], list[str]]:
    """The broker and PostgreSQL, started unless configured external or already running
    (:func:`pinpipe.services.resolve.services_up`). Returns their statuses and the names of the
    embedded ones started now: those are the caller's to stop (:func:`stop_services`). When
    one fails, those started here are stopped again (``event`` is told) before it raises."""
    from pinpipe.services.resolve import services_up

    statuses = services_up(settings, event)
    return statuses, [s.name for s in statuses if s.started_now]


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
    if settings.postgres.dsn is not None:
        return settings.postgres.dsn.get_secret_value()
    from pinpipe.services.resolve import embedded_postgres

    server = embedded_postgres(settings)
    if not server.attach():
        raise HealthTimeout("the embedded PostgreSQL is not running")
    return server.dsn


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
                final = _drain(run)
            supervisor.stop_all()
    finally:
        stop_services(run.settings, run.started_services, run.event)
        emulated = _emulator_stats(run)
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
        _write_json(run.settings.run_dir / LAST_RUN_FILE, summary)
        _clear_state(run.settings)
        if emulated:
            console.print(f"[cyan]up[/] the emulator sent {emulated.get('sent', 0):,} records "
                          f"({emulated.get('posts', 0):,} posts)")  # fmt: skip
        if final:
            console.print(f"[cyan]up[/] API accepted {final.get('accepted') or 0:,.0f} records, "
                          f"rejected {final.get('rejected') or 0:,.0f}")  # fmt: skip
        _print_losses(console, summary["lost"])
        if run.kafka_records:
            console.print(f"[cyan]up[/] Kafka holds {sum(run.kafka_records.values()):,} records: "
                          + ", ".join(f"{t} {n:,}" for t, n in sorted(run.kafka_records.items())))
        console.print("[green]stopped[/]")


def _print_losses(console: Console, lost: list[dict]) -> None:
    """Say out loud what a broker that came back empty took with it (from the lake's ledger)."""
    if not lost:
        return
    total = sum(entry["end"] - entry["first"] for entry in lost)
    ranges = "; ".join(f"{e['topic']}[{e['partition']}] {e['first']}..{e['end'] - 1} (log {e['generation']})"
                       for e in lost)  # fmt: skip
    console.print(f"[bold red]LOST[/] {total:,} acknowledged records never reached the lake "
                  f"(the broker came back empty): {ranges}")  # fmt: skip


def _emulator_stats(run: UpRun) -> dict:
    """What every emulator process of this run sent, summed ({} if the run had no emulator)."""
    if not run.options.emulate_rate:
        return {}
    totals: dict[str, int] = {}
    for path in sorted((run.settings.run_dir / EMULATOR_STATS_DIR).glob("*.json")):
        try:
            counts = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for name, value in counts.items():
            totals[name] = totals.get(name, 0) + int(value)
    return totals


def stop_services(settings: Settings, names: list[str], event: Event) -> None:
    """Stop the embedded services ``names`` (as returned by :func:`start_services`)."""
    from pinpipe.services.resolve import stop_embedded

    stop_embedded(settings, names, event)


# --- detach, status, down -----------------------------------------------------------------------


def detach(argv: list[str], settings: Settings, console: Console, timeout_s: float = 300.0) -> int:
    """Run ``pinpipe up`` (``argv`` without ``--detach``) in the background; wait until it is
    running (or has failed), then print the status table."""
    if not _may_start(settings, console):
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
    from pinpipe.services.postgres import postgres_is_healthy

    if settings.postgres.dsn is not None:
        return postgres_is_healthy(settings.postgres.dsn.get_secret_value(), timeout=2.0), None
    from pinpipe.services.resolve import embedded_postgres

    server = embedded_postgres(settings)
    if not server.attach():
        return False, None
    return postgres_is_healthy(server.dsn, timeout=2.0), server.pid


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
    _print_losses(console, [asdict(lost) for lost in lost_records(settings)])
    return 0 if all(r["healthy"] is not False for r in rows) else 1


def _may_start(settings: Settings, console: Console) -> bool:
    """No other up runs, and none that was killed left its components running (their ports,
    their consumer group); else say why and what to do."""
    existing = read_state(settings)
    if existing is not None:
        console.print(f"[red]pinpipe up is already running[/] (pid {existing['pid']}); `pinpipe down` stops it")
        return False
    left = _left_behind(settings)
    if left:
        console.print(f"[red]a pinpipe up that was killed left {', '.join(left)} running[/]; "
                      "`pinpipe down` stops them")
        return False
    return True


def _left_behind(settings: Settings) -> list[str]:
    """Components of a killed ``pinpipe up`` that still run ("api (pid 12)", ...); its services
    are not counted: a new up uses them."""
    from pinpipe.processes import pid_is_alive

    state = _recorded_state(settings)
    if state is None or pid_is_alive(int(state.get("pid", 0))):
        return []
    return [f"{c['name']} (pid {c['pid']})" for c in _own_children(state)]


def _own_children(state: dict) -> list[dict]:
    """The components in up's record that up started as processes of its own and that still
    run (the command line guards against a pid reused since): not the services (broker,
    PostgreSQL, the Spark cluster's daemons)."""
    from pinpipe.processes import process_cmdline

    services = set(state.get("services", ["broker", "postgres"]))
    return [c for c in state.get("components", []) if c["name"] not in services
            and c.get("pid") and "pinpipe" in process_cmdline(int(c["pid"]))]


def down(settings: Settings, console: Console) -> int:
    """Stop a ``pinpipe up`` running in the background (SIGTERM; it stops its components).

    An up that was killed (SIGKILL, a crash) could not stop what it started: down then stops
    those itself, from up's record, and only those. A broker or PostgreSQL that was running
    before up (``pinpipe services up``, or an earlier run) is someone else's and stays.
    """
    from pinpipe.processes import pid_is_alive, terminate_pid

    state = _recorded_state(settings)
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
    for component in reversed(_own_children(state)):
        console.print(f"stopping {component['name']} (pid {component['pid']})")
        end_process_group(int(component["pid"]), settings.up.stop_timeout_s)
    if killed:  # else up stopped the services it started itself
        stop_services(settings, state.get("started_services", []),
                      lambda name, message: console.print(f"{name} {message}"))
    _clear_state(settings)
    try:
        last = json.loads((settings.run_dir / LAST_RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        last = {}
    _print_losses(console, last.get("lost", []))
    if last.get("kafka"):
        kafka = last["kafka"]
        console.print(f"Kafka holds {sum(kafka.values()):,} records: "
                      + ", ".join(f"{topic} {n:,}" for topic, n in sorted(kafka.items())))
    console.print("[green]stopped[/]")
    return 0
