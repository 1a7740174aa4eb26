"""The chaos soak: `pinpipe up` under load while its processes are killed and paused.

Runs ``pinpipe services up`` and ``pinpipe up --detach`` in a data dir of its own (free ports,
``lake.rotate_age_s`` small so the sink commits often), posts ``--rate`` REST-proxy posts/s of
``--batch`` distinct records each through the ingest API (:mod:`soak_lib.load`), and injects a
fault at seeded random times, at least one every ``--fault-every`` seconds
(:mod:`soak_lib.faults`): SIGKILL of the API, the lake sink, the stream job's Python process,
its JVM, the dashboard, a running batch job (up's ``--batch-every`` scheduler starts them);
SIGSTOP/SIGCONT of the broker and of PostgreSQL (postmaster and backends) for ``--pause``
seconds; an immediate PostgreSQL restart; with ``--broker-kill`` a SIGKILL of the broker
(meaningful only with a durable broker, ``--broker-storage``). After each fault it measures the
recovery: the first 200 afterwards, every component healthy in ``pinpipe status``, a stream
micro-batch committed.

When the load stops, refused posts are retried for ``--retry-s``, then ``pinpipe down`` drains
and stops up (the services stay up), ``pinpipe lake verify`` and ``pinpipe batch --all`` run,
and the soak judges with its own reading of the lake and PostgreSQL (:mod:`soak_lib.check`):
every record answered 200 in the raw files exactly once, in PostgreSQL's speed tables, the
speed tables equal to the batch layer's clean tables value for value
(:func:`pinpipe.serve.reconcile.compare_layers`), no answer but 200/429/503 (or none, while the
API is down). It prints a table of faults and records and exits 1 on any loss, duplication,
unexpected answer, key missing from PostgreSQL, disagreement of the layers, fault not recovered
within ``--recovery-timeout``, or loss that ``pinpipe lake verify`` did not report. The data
dir (logs, lake, ``soak-commands.log``) is kept for the evidence unless ``--clean``::

    PYTHONPATH=src .venv/bin/python bench/soak.py --minutes 30 --rate 200 --fault-every 55
    PYTHONPATH=src .venv/bin/python bench/soak.py --minutes 3 --rate 50 --fault-every 30 \\
        --faults api-kill,sink-kill,stream-kill,broker-pause,pg-pause --pause 10-10
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from soak_lib import faults as fault_lib  # noqa: E402
from soak_lib.check import judge_records, read_lake, speed_keys  # noqa: E402
from soak_lib.load import LoadProcess  # noqa: E402
from soak_lib.platform import CommandResult, load_soak_settings, pinpipe, soak_env  # noqa: E402
from soak_lib.report import judge, render  # noqa: E402


@dataclass
class SoakOptions:
    minutes: float = 3.0
    rate: float = 50.0
    batch: int = 3
    concurrency: int = 64
    fault_every_s: float = 30.0
    seed: int = 1
    kinds: tuple[str, ...] = fault_lib.DEFAULT_KINDS
    pause_s: tuple[float, float] = (5.0, 30.0)
    broker_kill: bool = False
    broker_storage: str | None = None
    batch_every_s: float = 120.0
    warmup_s: float = 20.0
    retry_s: float = 30.0
    recovery_timeout_s: float = 120.0
    recovery_target_s: float = 30.0
    rotate_age_s: float = 10.0
    data_dir: Path | None = None
    clean: bool = False


@dataclass
class SoakResult:
    failures: list[str]
    warnings: list[str]
    report: str
    data_dir: Path
    faults: list = field(default_factory=list)
    verdict: object = None

    @property
    def ok(self) -> bool:
        return not self.failures


def _data_dir(options: SoakOptions) -> Path:
    if options.data_dir is not None:
        options.data_dir.mkdir(parents=True, exist_ok=True)
        return options.data_dir.resolve()
    # Under /tmp, 0755: as root, PostgreSQL's user must be able to enter it.
    path = Path(tempfile.mkdtemp(prefix="pinpipe-soak-", dir="/tmp"))
    os.chmod(path, 0o755)
    return path


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} soak: {text}", flush=True)


def _wait_for_batch(settings, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if fault_lib.component_pid(settings, "batch"):
            return True
        time.sleep(1.0)
    return False


def _wait_flowing(dsn: str, since_wall: float, timeout_s: float, with_records: bool = True) -> float | None:
    """Seconds until the stream job committed a micro-batch (with records) since ``since_wall``
    (None: not within ``timeout_s``)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if fault_lib.stream_committed_since(dsn, since_wall, with_records=with_records):
            return time.monotonic() - began
        time.sleep(0.5)
    return None


def _run_faults(settings, dsn: str, load: LoadProcess, options: SoakOptions, began: float,
                end: float) -> tuple[list, list[threading.Thread]]:
    """Inject the seeded faults from ``began`` until ``end`` (monotonic). Each fault's recovery is
    measured in a thread of its own, so the next fault comes on time even when one is slow."""
    kinds = list(options.kinds) + (["broker-kill"] if options.broker_kill and "broker-kill" not in options.kinds else [])
    load_s = end - began
    plan = fault_lib.schedule(kinds, options.seed, load_s, options.fault_every_s, options.warmup_s)
    rng = random.Random(options.seed + 1)
    done, watchers = [], []
    for index, (at, kind) in enumerate(plan):
        delay = began + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if time.monotonic() - began > load_s - 5:
            break
        pause = rng.uniform(*options.pause_s)
        if kind == "batch-kill" and not _wait_for_batch(settings, 10):
            # Up runs a batch every --batch-every: kill one later, do the next kind now.
            later = [i for i in range(index + 1, len(plan)) if plan[i][1] != "batch-kill"]
            if not later:
                _say("batch-kill skipped: no batch job running")
                continue
            kind = plan[later[0]][1]
            plan[later[0]] = (plan[later[0]][0], "batch-kill")
            _say(f"no batch job running: {kind} now, batch-kill later")
        jvm = fault_lib.stream_jvm_pid(settings) if kind == "stream-kill" else None
        try:
            fault = fault_lib.inject(settings, kind, pause)
        except fault_lib.FaultSkipped as error:
            _say(f"{kind} skipped: {error}")
            continue
        _say(f"{kind} (pid {fault.pid}) {fault.detail}")
        if done and done[-1].recovered_s is None:
            done[-1].notes.append(f"{kind} came before it recovered")
        done.append(fault)
        watcher = threading.Thread(target=_recover, args=(settings, dsn, fault, load, options, jvm),
                                   name=f"recover-{kind}", daemon=True)
        watcher.start()
        watchers.append(watcher)
    return done, watchers


def _recover(settings, dsn: str, fault, load: LoadProcess, options: SoakOptions, jvm: int | None) -> None:
    fault_lib.wait_recovered(settings, dsn, fault, load, options.recovery_timeout_s)
    if fault.kind == "pg-restart" and fault.recovered_s is not None:
        shown_down = _status_says_down(settings, "postgres")
        if shown_down:
            fault.notes.append(f"`pinpipe status` shows postgres down ({shown_down})")
    if jvm is not None:
        from pinpipe.processes import pid_is_alive

        if pid_is_alive(jvm):
            fault.notes.append(f"the killed stream job's JVM (pid {jvm}) still runs")
    shown = "not recovered" if fault.recovered_s is None else f"recovered in {fault.recovered_s:.1f} s"
    _say(f"{fault.kind} at {fault.wall}: {shown} (first 200 {_s(fault.first_ok_s)}, healthy "
         f"{_s(fault.healthy_s)}, stream {_s(fault.stream_s)}) {'; '.join(fault.notes)}")


def _status_says_down(settings, name: str) -> str:
    """What ``pinpipe status`` says of ``name`` when it says it is down ('' otherwise)."""
    from pinpipe.platform.control import status_rows

    for row in status_rows(settings, sample_s=0.05) or []:
        if row["name"] == name and row["healthy"] is False:
            return f"pid {row['pid']}: {row['note']}"
    return ""


def batch_runs(dsn: str) -> dict[str, int]:
    """``pinpipe.batch_run`` rows by status."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM pinpipe.batch_run GROUP BY status").fetchall())


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def run_soak(options: SoakOptions) -> SoakResult:
    """Run the soak; the result holds the printed report and the reasons it failed (if any)."""
    data_dir = _data_dir(options)
    env = soak_env(data_dir, rotate_age_s=options.rotate_age_s, broker_storage=options.broker_storage)
    commands = data_dir / "soak-commands.log"
    failures: list[str] = []
    warnings: list[str] = []
    results: dict[str, CommandResult] = {}
    faults, verdict, layers = [], None, None
    load: LoadProcess | None = None
    settings = load_soak_settings(env)
    if options.broker_storage and "storage" not in type(settings.broker).model_fields:
        raise SystemExit("--broker-storage: this pinpipe has no broker.storage setting yet (memory storage only)")
    _say(f"data dir {data_dir}")
    try:
        results["services up"] = pinpipe(env, "services", "up", timeout_s=180, log=commands)
        if results["services up"].code != 0:
            raise RuntimeError(f"pinpipe services up failed:\n{results['services up'].tail()}")
        up_args = ["up", "--detach"]
        if "batch-kill" in options.kinds:
            up_args += ["--batch-every", f"{options.batch_every_s:g}s"]
        results["up"] = pinpipe(env, *up_args, timeout_s=400, log=commands)
        if results["up"].code != 0:
            raise RuntimeError(f"pinpipe up --detach failed:\n{results['up'].tail(30)}")
        from pinpipe.platform.state import read_state
        from pinpipe.processes import pid_is_alive
        from pinpipe.services.resolve import embedded_postgres

        server = embedded_postgres(settings)
        server.attach()
        dsn = server.dsn
        api = next(c for c in read_state(settings)["components"] if c["name"] == "api")
        # As up does before its emulator: the stream job's new query runs micro-batch 0 (on empty
        # topics) once Spark has started; the load's minutes start then.
        started = _wait_flowing(dsn, 0, 300, with_records=False)
        if started is None:
            raise RuntimeError("the stream job's query did not run a micro-batch within 300 s")
        _say(f"the stream job's query runs ({started:.0f} s after up was running)")
        _say(f"up is running; load {options.rate:g} posts/s x {options.batch} records -> {api['address']}")
        load = LoadProcess(api["address"], rate=options.rate, batch=options.batch, seed=options.seed,
                           concurrency=options.concurrency, tag=f"{options.seed}-{int(time.time())}")
        began = time.monotonic()
        load.start()
        # Faults start once records flow to PostgreSQL: a stream job still starting its first
        # query would make every early fault look slow to recover.
        flowing = _wait_flowing(dsn, time.time() - 1, options.recovery_timeout_s)
        if flowing is None:
            raise RuntimeError(f"no stream micro-batch with records within {options.recovery_timeout_s:g} s")
        _say(f"records reach PostgreSQL ({flowing:.0f} s after the load started); faults begin")
        faults, watchers = _run_faults(settings, dsn, load, options, time.monotonic(), began + options.minutes * 60)
        remaining = began + options.minutes * 60 - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        for watcher in watchers:  # the load goes on while a recovery is being measured
            watcher.join(timeout=options.recovery_timeout_s + 30)
        if read_state(settings) is None:
            failures.append("pinpipe up was not running any more when the load stopped (see logs/up.log)")
        _say(f"load stopped after {time.monotonic() - began:.0f} s; retrying refused posts for up to {options.retry_s:g} s")
        unacked = load.finish(options.retry_s)
        if unacked:
            warnings.append(f"{unacked} posts never acknowledged (refused or unanswered until the end)")
        results["status"] = pinpipe(env, "status", timeout_s=60, log=commands)
        # While the broker runs, once the sink has written its last files (a file is closed
        # rotate_age_s after its first record), so verify sees every committed offset.
        time.sleep(options.rotate_age_s + 5)
        results["lake verify"] = pinpipe(env, "lake", "verify", timeout_s=300, log=commands)
        _say(f"lake verify exit {results['lake verify'].code}; pinpipe down (drains)")
        services = (fault_lib.broker_pid(settings), fault_lib.postmaster_pid(settings))
        results["down"] = pinpipe(env, "down", timeout_s=900, log=commands)
        gone = [name for name, pid in zip(("broker", "PostgreSQL"), services) if pid and not pid_is_alive(pid)]
        if gone:
            # up found them running (`pinpipe services up`): down must leave them so. PostgreSQL
            # keeps its data: start it again for the checks (the broker comes back empty).
            failures.append(f"`pinpipe down` stopped the {' and '.join(gone)} that `pinpipe services up` had"
                            " started and up had left running (pids " + ", ".join(str(p) for p in services) + ")")
            results["services up again"] = pinpipe(env, "services", "up", timeout_s=180, log=commands)
            server = embedded_postgres(settings)
            server.attach()
            dsn = server.dsn
        _say("pinpipe batch --all")
        results["batch"] = pinpipe(env, "batch", "--all", timeout_s=900, log=commands)
        if results["batch"].code != 0:
            failures.append(f"pinpipe batch --all failed (exit {results['batch'].code})")
        lake = read_lake(Path(settings.lake.root or data_dir / "lake"))
        verdict = judge_records(load.ledger, lake, speed_keys(dsn))
        runs = batch_runs(dsn)
        _say(f"batch runs: {runs}")
        if runs.get("running"):
            failures.append(f"pinpipe.batch_run: {runs['running']} run(s) still 'running' after the soak"
                            " (a killed batch job's run is recorded as failed when the next starts)")
        if results["batch"].code == 0:
            from pinpipe.serve.reconcile import compare_layers

            layers = compare_layers(settings, dsn)
    except Exception as error:
        failures.append(f"the soak could not run to its end: {type(error).__name__}: {error}")
    finally:
        if load is not None and load.running():
            load.finish(0)
        if "down" not in results:
            results["down"] = pinpipe(env, "down", timeout_s=900, log=commands)
        results["services down"] = pinpipe(env, "services", "down", timeout_s=120, log=commands)

    failures += judge(verdict, layers, faults, results, options, warnings)
    report = render(options, load, faults, verdict, layers, results, data_dir, failures, warnings)
    if options.clean and not failures:
        shutil.rmtree(data_dir, ignore_errors=True)
    return SoakResult(failures, warnings, report, data_dir, faults, verdict)


def parse_args(argv: list[str] | None = None) -> SoakOptions:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=200.0, help="posts (requests) per second")
    parser.add_argument("--batch", type=int, default=3, help="records per post")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight at most")
    parser.add_argument("--fault-every", type=float, default=55.0, help="at least one fault this often (s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default=",".join(fault_lib.DEFAULT_KINDS),
                        help=f"kinds, comma-separated, of: {', '.join(fault_lib.KINDS)}")
    parser.add_argument("--pause", default="5-30", help="pause length range in seconds, MIN-MAX")
    parser.add_argument("--broker-kill", action="store_true", help="also SIGKILL the broker (durable broker only)")
    parser.add_argument("--broker-storage", default=None, help="broker.storage for a durable broker (e.g. s3://...)")
    parser.add_argument("--batch-every", type=float, default=120.0, help="up's batch schedule (s), for batch-kill")
    parser.add_argument("--recovery-timeout", type=float, default=120.0)
    parser.add_argument("--recovery-target", type=float, default=30.0)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--clean", action="store_true", help="remove the data dir after a passing run")
    args = parser.parse_args(argv)
    kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    unknown = [k for k in kinds if k not in fault_lib.KINDS]
    if unknown:
        parser.error(f"unknown fault kinds: {', '.join(unknown)}")
    low, _, high = args.pause.partition("-")
    return SoakOptions(minutes=args.minutes, rate=args.rate, batch=args.batch, concurrency=args.concurrency, fault_every_s=args.fault_every,
                       seed=args.seed, kinds=kinds, pause_s=(float(low), float(high or low)),
                       broker_kill=args.broker_kill, broker_storage=args.broker_storage,
                       batch_every_s=args.batch_every, recovery_timeout_s=args.recovery_timeout,
                       recovery_target_s=args.recovery_target, data_dir=args.data_dir, clean=args.clean)


def main(argv: list[str] | None = None) -> int:
    result = run_soak(parse_args(argv))
    print(result.report, flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
