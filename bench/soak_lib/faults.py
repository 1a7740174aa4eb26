"""Faults the soak injects into a running ``pinpipe up``, and how long each took to recover.

Pids come from the run state ``pinpipe up`` writes (``<run_dir>/up.json`` through
:func:`pinpipe.platform.state.read_state`) and the services' run records (``<run_dir>/broker.json``,
``postgres.json``); PostgreSQL's postmaster, after a restart, from its ``postmaster.pid``
(:func:`pinpipe.services.resolve.embedded_postgres`). The stream job's JVM is the ``java``
descendant of the stream job's Python process.

Recovery of a fault (from the kill, or from the end of a pause) is the latest of: the first
request sent afterwards that the API answered 200; every component of ``pinpipe status``
healthy again (:func:`pinpipe.platform.control.status_rows`; the one killed with a new pid; the broker and
PostgreSQL by a request of their own, since up's record of their pids is not its health);
the stream job committing a micro-batch with records.
"""

from __future__ import annotations

import os
import pwd
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pinpipe.processes import process_cmdline, process_table

# Name, component in up's state, whether it needs --broker-kill.
KINDS = {
    "api-kill": "api",
    "sink-kill": "lake-sink",
    "stream-kill": "stream",
    "stream-jvm-kill": "stream",
    "dashboard-kill": "dashboard",
    "batch-kill": "batch",
    "broker-pause": "broker",
    "pg-pause": "postgres",
    "pg-restart": "postgres",
    "broker-kill": "broker",
}
CHEAP = ("api-kill", "sink-kill", "stream-kill", "broker-pause", "pg-pause")
DEFAULT_KINDS = tuple(k for k in KINDS if k != "broker-kill")


class FaultSkipped(RuntimeError):
    """The fault could not be injected now (its process is not there)."""


@dataclass
class Fault:
    kind: str
    at: float  # monotonic: the kill, or the start of the pause
    ref: float = 0.0  # what recovery is measured from: the kill, or the end of the pause
    wall: str = ""
    detail: str = ""
    pid: int | None = None
    first_ok_s: float | None = None
    healthy_s: float | None = None
    stream_s: float | None = None
    recovered_s: float | None = None  # None: not within the recovery timeout
    notes: list[str] = field(default_factory=list)


def _descendants(pid: int) -> list[int]:
    table = list(process_table())
    children: dict[int, list[int]] = {}
    for entry in table:
        children.setdefault(entry.ppid, []).append(entry.pid)
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def component_pid(settings, name: str) -> int | None:
    from pinpipe.platform.state import read_state

    state = read_state(settings) or {}
    for component in state.get("components", []):
        if component.get("name") == name and component.get("pid"):
            return int(component["pid"])
    return None


def postmaster_pid(settings) -> int | None:
    from pinpipe.services.resolve import embedded_postgres

    server = embedded_postgres(settings)
    return server.pid if server.attach() else None


def broker_pid(settings) -> int | None:
    from pinpipe.services.state import read_record

    record = read_record(settings.run_dir, "broker")
    return record.pid if record else None


def stream_jvm_pid(settings) -> int | None:
    stream = component_pid(settings, "stream")
    if stream is None:
        return None
    jvms = [p for p in _descendants(stream) if "java" in process_cmdline(p).split(" ", 1)[0]]
    return jvms[0] if jvms else None


def _kill(pid: int | None, what: str, group: bool = False) -> int:
    if pid is None:
        raise FaultSkipped(f"no {what} running")
    try:
        if group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        raise FaultSkipped(f"{what} (pid {pid}) already gone") from None
    return pid


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def restart_postgres_immediately(settings) -> str:
    """``pg_ctl restart -m immediate`` (crash recovery on start), as the server's user, on the
    same port (pg_ctl reuses ``postmaster.opts``)."""
    from pinpipe.services.resolve import embedded_postgres

    server = embedded_postgres(settings)
    if not server.attach():
        raise FaultSkipped("PostgreSQL not running")
    pg_ctl = os.path.join(os.path.dirname(os.readlink(f"/proc/{server.pid}/exe")), "pg_ctl")
    owner = server.data_dir.stat().st_uid
    kwargs: dict = {}
    if os.geteuid() == 0 and owner != 0:
        user = pwd.getpwuid(owner)
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    done = subprocess.run(
        [pg_ctl, "restart", "-D", str(server.data_dir), "-m", "immediate", "-w", "-t", "60",
         "-l", str(server.log_path)],
        env={**env, "LC_ALL": "C"}, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=90, start_new_session=True, **kwargs,
    )  # fmt: skip
    if done.returncode != 0:
        return f"pg_ctl restart failed ({done.returncode}): {done.stdout.strip()[-300:]}"
    return f"old postmaster {server.pid}, new {postmaster_pid(settings)}"


def inject(settings, kind: str, pause_s: float) -> Fault:
    """Inject one fault; a pause returns after the SIGCONT. Raises :class:`FaultSkipped`."""
    fault = Fault(kind, time.monotonic(), wall=datetime.now(UTC).strftime("%H:%M:%S"))
    if kind in ("api-kill", "sink-kill", "stream-kill", "dashboard-kill"):
        fault.pid = _kill(component_pid(settings, KINDS[kind]), KINDS[kind])
    elif kind == "stream-jvm-kill":
        fault.pid = _kill(stream_jvm_pid(settings), "stream JVM")
    elif kind == "batch-kill":
        # The batch job leads its own process group (its driver and Spark's JVM): all of it.
        fault.pid = _kill(component_pid(settings, "batch"), "batch job", group=True)
    elif kind == "broker-kill":
        fault.pid = _kill(broker_pid(settings), "broker")
    elif kind in ("broker-pause", "pg-pause"):
        if kind == "broker-pause":
            pid = broker_pid(settings)
            pids = [] if pid is None else [pid]
        else:
            pid = postmaster_pid(settings)
            pids = [] if pid is None else [pid, *_descendants(pid)]  # its backends too
        if not pids:
            raise FaultSkipped(f"{KINDS[kind]} not running")
        fault.pid = pids[0]
        _signal_all(pids, signal.SIGSTOP)
        try:
            time.sleep(pause_s)
        finally:
            _signal_all(list(reversed(pids)), signal.SIGCONT)
        fault.detail = f"{pause_s:.0f} s, {len(pids)} process(es)"
    elif kind == "pg-restart":
        fault.pid = postmaster_pid(settings)
        fault.detail = restart_postgres_immediately(settings)
    else:
        raise ValueError(f"unknown fault kind {kind!r}")
    fault.ref = time.monotonic()
    return fault


# --- recovery -------------------------------------------------------------------------------


def _services_healthy(settings, dsn: str) -> bool:
    from pinpipe.services.broker import broker_is_healthy
    from pinpipe.services.pg_common import postgres_is_healthy
    from pinpipe.services.state import read_record

    record = read_record(settings.run_dir, "broker")
    if record is None:
        return False
    return broker_is_healthy(settings.broker.client_config(record.address), timeout=2.0) and \
        postgres_is_healthy(dsn, timeout=2.0)


def components_healthy(settings, dsn: str, killed: Fault | None = None) -> tuple[bool, list[str]]:
    """Every component of ``pinpipe status`` healthy (the killed one with a new pid); the names of
    those that are not."""
    from pinpipe.platform.control import status_rows

    rows = status_rows(settings, sample_s=0.05)
    if rows is None:
        return False, ["pinpipe up not running"]
    down = []
    for row in rows:
        if row["name"] in ("broker", "postgres"):
            continue  # up.json keeps their pids from its start: checked directly below
        if row["healthy"] is False:
            down.append(row["name"])
        elif killed is not None and KINDS.get(killed.kind) == row["name"] and row["name"] != "batch" \
                and row["pid"] == killed.pid:
            down.append(f"{row['name']} (still pid {killed.pid})")
    if not _services_healthy(settings, dsn):
        down.append("broker/postgres")
    return not down, down


def stream_committed_since(dsn: str, since_wall: float, with_records: bool = True) -> bool:
    """The stream job committed a micro-batch (with records) since ``since_wall`` (epoch s)."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pinpipe.stream_batch WHERE records >= %s AND committed_at >= to_timestamp(%s)",
                (1 if with_records else 0, since_wall),
            ).fetchone()
    except Exception:
        return False
    return bool(row and row[0])


def wait_recovered(settings, dsn: str, fault: Fault, load, timeout_s: float) -> Fault:
    """Poll until the fault has recovered (see the module) or ``timeout_s`` after its ``ref``."""
    ref_wall = time.time() - (time.monotonic() - fault.ref)
    start = max(0, load.answer_count() - load.concurrency * 4)  # answered before ref, bar stragglers
    deadline = fault.ref + timeout_s
    last_down: list[str] = []
    while time.monotonic() < deadline:
        now = time.monotonic()
        if fault.first_ok_s is None:
            answered = load.first_ok_after(fault.ref, start)
            if answered is not None:
                fault.first_ok_s = answered - fault.ref
        if fault.healthy_s is None:
            try:
                ok, last_down = components_healthy(settings, dsn, fault)
            except Exception as error:  # a scrape that failed: not healthy yet
                ok, last_down = False, [type(error).__name__]
            if ok:
                fault.healthy_s = time.monotonic() - fault.ref
        if fault.stream_s is None and stream_committed_since(dsn, ref_wall):
            fault.stream_s = now - fault.ref
        if None not in (fault.first_ok_s, fault.healthy_s, fault.stream_s):
            fault.recovered_s = max(fault.first_ok_s, fault.healthy_s, fault.stream_s)
            return fault
        time.sleep(0.5)
    missing = [name for name, value in (("no 200", fault.first_ok_s), ("not healthy", fault.healthy_s),
                                        ("no stream batch", fault.stream_s)) if value is None]
    fault.notes.append(f"not recovered within {timeout_s:.0f} s: {', '.join(missing)}"
                       + (f"; down: {', '.join(last_down)}" if last_down else ""))
    return fault


def schedule(kinds: list[str], seed: int, load_s: float, fault_every_s: float, warmup_s: float) -> list[tuple[float, str]]:
    """Seeded fault times (seconds after the load starts) and kinds: the first after ``warmup_s``,
    then one every 0.5-1 x ``fault_every_s``; kinds in shuffled rounds, each once a round."""
    rng = random.Random(seed)
    plan, at, round_ = [], warmup_s + rng.uniform(0, fault_every_s * 0.3), []
    while at < load_s - 5:
        if not round_:
            round_ = list(kinds)
            rng.shuffle(round_)
        plan.append((at, round_.pop()))
        at += rng.uniform(0.5, 1.0) * fault_every_s
    return plan
