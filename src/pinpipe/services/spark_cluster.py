"""The embedded standalone Spark cluster: one master and N workers on loopback.

The pyspark wheel has no ``sbin/start-master.sh``, but its jars hold the standalone cluster's
classes: each daemon is ``spark-class org.apache.spark.deploy.master.Master`` (or ``.worker.Worker``)
run from the installed pyspark, nothing downloaded. Every daemon listens on ``127.0.0.1``, on free
ports (its RPC port and its web UI), and runs in a process group of its own: a worker starts its
executors' JVMs, and those their Python workers, in that group, so stopping the group leaves no
JVM behind (SIGTERM, then SIGKILL).

Healthy means: the master's ``/json/`` answers ``ALIVE`` and lists every worker as ``ALIVE``
(registered). The daemons are recorded in ``<run_dir>`` like the broker and PostgreSQL
(:mod:`pinpipe.services.state`: ``spark-master.json``, ``spark-worker-<i>.json`` with the web
UI's address); logs go to ``<data_dir>/logs/spark-*.log``, the workers' scratch space (executor
logs, fetched files) to ``<data_dir>/spark/work``.

A job runs on it with ``batch.spark_master = "embedded"`` (:func:`resolve_master`), which is what
``--spark-workers N`` sets; any other ``spark://`` master is a cluster run by someone else.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from pinpipe.config import Settings
from pinpipe.processes import end_process_group, pid_is_alive, process_cmdline
from pinpipe.services.broker import free_port
from pinpipe.services.child import ChildService
from pinpipe.services.errors import ServiceError
from pinpipe.services.state import (
    ServiceRecord,
    read_record,
    record_names,
    remove_record,
    write_record,
)
from pinpipe.services.status import EMBEDDED, ServiceStatus

HOST = "127.0.0.1"
MASTER = "spark-master"
WORKER = "spark-worker-"  # + its index, from 1
WANTED_FILE = "spark-cluster.json"  # in the run dir: how many workers the cluster was started with
EMBEDDED_MASTER = "embedded"  # the batch.spark_master value that means this cluster
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
# A daemon's own heap (not its executors'): Spark's default of 1g is far more than a master with
# a few workers needs (measured RSS: master ~230 MB, worker ~170 MB).
DAEMON_MEMORY = "256m"


class SparkClusterError(ServiceError):
    """The embedded Spark cluster could not be started or reached; the message has a log tail."""


def spark_home() -> Path:
    """The installed pyspark's Spark home (its ``bin/spark-class`` and ``jars/``)."""
    try:
        from pyspark.find_spark_home import _find_spark_home
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SparkClusterError("the Spark cluster needs pyspark: pip install 'pinpipe[spark]'") from exc
    return Path(_find_spark_home())


def master_state(web_ui: str, timeout: float = 2.0) -> dict | None:
    """The master's own view (``<web_ui>/json/``: status, workers, apps); None if it does not answer."""
    try:
        with urllib.request.urlopen(f"{web_ui}/json/", timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def alive_workers(state: dict | None) -> set[str]:
    """``host:port`` of every worker the master lists as ALIVE."""
    if not state:
        return set()
    return {f"{w['host']}:{w['port']}" for w in state.get("workers", []) if w.get("state") == "ALIVE"}


class SparkDaemon(ChildService):
    """One master or worker JVM, on ``127.0.0.1:<port>`` with its web UI on ``<web_ui_port>``,
    in a process group of its own (its executors too); :meth:`stop` ends the whole group."""

    def __init__(self, name: str, main_class: str, args: list[str], log_path: Path,
                 port: int = 0, web_ui_port: int = 0) -> None:
        self.name = name
        self.main_class = main_class
        self.args = args
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.web_ui_port = web_ui_port or free_port()

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def web_ui(self) -> str:
        return f"http://{HOST}:{self.web_ui_port}"

    def start(self) -> None:
        """Spawn the JVM (it outlives this process: a session of its own); no health check."""
        command = [
            str(spark_home() / "bin" / "spark-class"), self.main_class,
            "--host", HOST, "--port", str(self.port), "--webui-port", str(self.web_ui_port),
            *self.args,
        ]  # fmt: skip
        env = {
            **os.environ,
            "SPARK_DAEMON_MEMORY": DAEMON_MEMORY,
            "SPARK_LOCAL_IP": HOST,  # every port the daemon and its executors open: loopback only
            "SPARK_NO_DAEMONIZE": "1",
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- starting {' '.join(command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=env, close_fds=True,
            )  # fmt: skip
        self.pid = self._process.pid

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the daemon's process group (executors included), SIGKILL what is left."""
        process, self._process = self._process, None
        if process is None:
            return
        end_process_group(process.pid, timeout)
        process.wait(timeout=5)
        self.pid = None

    def exited(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class SparkCluster:
    """A master and ``workers`` workers of ``cores`` cores and ``memory`` each, not recorded
    (the test fixtures' and benchmarks' cluster; :func:`cluster_up` records one for later commands).

    ``with`` starts it healthy on enter and stops every JVM on exit.
    """

    def __init__(self, data_dir: Path, workers: int, cores: int = 2, memory: str = "2g") -> None:
        self.data_dir = Path(data_dir)
        self.cores, self.memory = cores, memory
        self.master = SparkDaemon(MASTER, MASTER_CLASS, [], self.data_dir / "logs" / f"{MASTER}.log")
        self.workers: list[SparkDaemon] = []
        self.wanted = workers

    @property
    def url(self) -> str:
        """``spark://127.0.0.1:<port>``: the master a job is given."""
        return f"spark://{self.master.address}"

    def start(self, timeout: float = 90.0) -> None:
        """Start the master, then the workers; return once every worker is registered."""
        try:
            self.master.start()
            self._wait(lambda state: state.get("status") == "ALIVE", "the master", timeout)
            for _ in range(self.wanted):
                self.add_worker(timeout)
        except BaseException:
            self.stop()
            raise

    def add_worker(self, timeout: float = 90.0, index: int | None = None) -> SparkDaemon:
        """Start one more worker (also after one was killed) and wait until it is registered;
        named ``spark-worker-<index>`` (default: the next number)."""
        index = index or len(self.workers) + 1
        worker = SparkDaemon(
            f"{WORKER}{index}", WORKER_CLASS,
            ["--cores", str(self.cores), "--memory", self.memory,
             "--work-dir", str(self.data_dir / "spark" / "work"), self.url],
            self.data_dir / "logs" / f"{WORKER}{index}.log",
        )  # fmt: skip
        self.workers.append(worker)
        worker.start()
        try:
            self._wait(lambda state: worker.address in alive_workers(state), worker.name, timeout, worker)
        except BaseException:  # Ctrl-C too: a detached worker would outlive us
            worker.stop()
            raise
        return worker

    def state(self) -> dict | None:
        """The master's ``/json/`` (None if it does not answer)."""
        return master_state(self.master.web_ui)

    def _wait(self, ready: Callable[[dict], bool], what: str, timeout: float,
              daemon: SparkDaemon | None = None) -> None:
        daemon = daemon or self.master
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if state is not None and ready(state):
                return
            for process in (self.master, daemon):
                if process.exited() is not None:
                    raise SparkClusterError(
                        f"{process.name} exited with code {process.exited()}; log tail:\n{process.log_tail()}"
                    )
            if time.monotonic() >= deadline:
                raise SparkClusterError(
                    f"{what} not ready within {timeout:.0f} s ({self.master.web_ui}/json/); "
                    f"log tail:\n{daemon.log_tail()}"
                )
            time.sleep(0.25)

    def stop(self) -> None:
        """Workers first (their executors with them), then the master."""
        for worker in self.workers:
            worker.stop()
        self.master.stop()

    def __enter__(self) -> SparkCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the recorded (detached) cluster of `pinpipe services up` ------------------------------------


def _recorded(settings: Settings, name: str, main_class: str) -> ServiceRecord | None:
    """The record of a daemon, if it is alive and really that daemon (not a reused pid)."""
    record = read_record(settings.run_dir, name)
    if record is None:
        return None
    cmdline = process_cmdline(record.pid)
    if main_class not in cmdline or f"--port {record.address.rsplit(':', 1)[1]}" not in cmdline:
        remove_record(settings.run_dir, name)
        return None
    return record


def running_master(settings: Settings) -> ServiceRecord | None:
    """The record of the embedded master (address ``spark://127.0.0.1:<port>``), or None."""
    return _recorded(settings, MASTER, MASTER_CLASS)


def _worker_records(settings: Settings) -> list[ServiceRecord]:
    found = (_recorded(settings, name, WORKER_CLASS) for name in record_names(settings.run_dir, WORKER))
    return [record for record in found if record is not None]


def resolve_master(settings: Settings) -> str:
    """The master a job is given: ``batch.spark_master``, with ``embedded`` replaced by the
    running embedded cluster's ``spark://`` URL (an error when none runs)."""
    master = settings.batch.spark_master
    if master != EMBEDDED_MASTER:
        return master
    record = running_master(settings)
    if record is None:
        raise SparkClusterError(
            "batch.spark_master is 'embedded' but no embedded Spark cluster is running: "
            "`pinpipe services up --spark-workers N` starts one"
        )
    return record.address


def child_spark_env(settings: Settings) -> dict[str, str]:
    """The environment that puts a child process's Spark jobs where this process's go: the
    resolved ``spark://`` URL when the master is ``embedded`` (a ``--spark-workers`` flag is
    not in the child's settings), else nothing (the child reads the same settings)."""
    if settings.batch.spark_master != EMBEDDED_MASTER:
        return {}
    return {"PINPIPE_BATCH__SPARK_MASTER": resolve_master(settings)}


def embedded_master_url(settings: Settings) -> str | None:
    """The running embedded cluster's ``spark://`` URL, or None."""
    record = running_master(settings)
    return None if record is None else record.address


def cluster_up(settings: Settings, started: list[str], timeout: float = 90.0) -> list[ServiceStatus]:
    """Start the embedded cluster with ``batch.spark_workers`` workers unless running (a
    running one gets the workers it lacks); record it. ``started`` gets ``spark-master`` when
    the cluster was started now (the caller stops it with :func:`cluster_down`)."""
    wanted = settings.batch.spark_workers
    if wanted <= 0:
        return []
    record = running_master(settings)
    cluster = SparkCluster(settings.data_dir, 0, settings.batch.spark_worker_cores,
                           settings.batch.spark_worker_memory)
    if record is None:
        # Recorded before the health check: a start interrupted half-way is stopped too.
        started.append(MASTER)
        cluster.master.start()
        assert cluster.master.pid is not None
        write_record(settings.run_dir, ServiceRecord.now(MASTER, cluster.master.pid, cluster.url,
                                                         cluster.master.web_ui))
        cluster._wait(lambda state: state.get("status") == "ALIVE", "the master", timeout)
    else:  # adopt the running master: new workers register with it
        port, ui = record.address.rsplit(":", 1)[1], record.web_ui.rsplit(":", 1)[1]
        cluster.master.port, cluster.master.web_ui_port = int(port), int(ui)
    _write_wanted(settings, wanted)
    workers = _worker_records(settings)
    indexes = {int(r.name.removeprefix(WORKER)) for r in workers}
    for index in range(1, wanted + 1):
        if len(workers) >= wanted:
            break
        if index in indexes:
            continue
        worker = cluster.add_worker(timeout, index=index)
        assert worker.pid is not None
        worker_record = ServiceRecord.now(worker.name, worker.pid, worker.address, worker.web_ui)
        write_record(settings.run_dir, worker_record)
        workers.append(worker_record)
    # The daemons outlive this process; it no longer waits for them.
    for daemon in (cluster.master, *cluster.workers):
        daemon._process = None
    return cluster_status(settings, started_now=MASTER in started)


def cluster_down(settings: Settings) -> list[ServiceStatus]:
    """Stop the recorded workers (their executors with them), then the master; forget them."""
    statuses = []
    for record in _worker_records(settings):
        end_process_group(record.pid)
        statuses.append(ServiceStatus(record.name, EMBEDDED, record.address, False, f"stopped (pid {record.pid})"))
    for name in record_names(settings.run_dir, WORKER):
        remove_record(settings.run_dir, name)
    master = running_master(settings)
    if master is not None:
        end_process_group(master.pid)
        statuses.insert(0, ServiceStatus(MASTER, EMBEDDED, master.address, False, f"stopped (pid {master.pid})"))
    elif settings.batch.spark_workers:
        statuses.insert(0, ServiceStatus(MASTER, EMBEDDED, "", False, "not running"))
    remove_record(settings.run_dir, MASTER)
    _wanted_path(settings).unlink(missing_ok=True)
    return statuses


def _wanted_path(settings: Settings) -> Path:
    return settings.run_dir / WANTED_FILE


def _write_wanted(settings: Settings, workers: int) -> None:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    _wanted_path(settings).write_text(json.dumps({"workers": workers}), encoding="utf-8")


def _wanted(settings: Settings) -> int:
    """How many workers the running cluster was started with (0 if unknown)."""
    try:
        return int(json.loads(_wanted_path(settings).read_text(encoding="utf-8"))["workers"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def cluster_status(settings: Settings, started_now: bool = False) -> list[ServiceStatus]:
    """The master (healthy: it answers ALIVE and every recorded worker is registered) and each
    worker (healthy: registered and ALIVE); nothing when no cluster runs nor is configured."""
    master = running_master(settings)
    if master is None:
        if settings.batch.spark_workers or settings.batch.spark_master == EMBEDDED_MASTER:
            return [ServiceStatus(MASTER, EMBEDDED, "", False, "not running")]
        return []
    state = master_state(master.web_ui)
    alive = alive_workers(state)
    workers = _worker_records(settings)
    registered = sum(1 for w in workers if w.address in alive)
    # A worker whose process is gone (killed, out of memory) has lost its record, not its place:
    # the cluster was started with this many, and is not healthy until services up restarts it.
    present = {w.name for w in workers}
    lost = [f"{WORKER}{i}" for i in range(1, _wanted(settings) + 1) if f"{WORKER}{i}" not in present]
    expected = len(workers) + len(lost)
    apps = ", ".join(app.get("name", "?") for app in (state or {}).get("activeapps", [])) or "none"
    healthy = state is not None and state.get("status") == "ALIVE" and registered == expected
    detail = (f"{'started (pid' if started_now else '(pid'} {master.pid}); web UI {master.web_ui}; "
              f"{registered} of {expected} workers registered; running apps: {apps}")  # fmt: skip
    if state is None:
        detail += "; no answer from its web UI"
    statuses = [ServiceStatus(MASTER, EMBEDDED, master.address, healthy, detail, started_now=started_now)]
    for worker in workers:
        ok = worker.address in alive and pid_is_alive(worker.pid)
        detail = f"pid {worker.pid}; web UI {worker.web_ui}; " + ("registered" if ok else "not registered")
        statuses.append(ServiceStatus(worker.name, EMBEDDED, worker.address, ok, detail))
    for name in lost:
        statuses.append(ServiceStatus(name, EMBEDDED, "", False, "its process is gone; `pinpipe "
                                      "services up --spark-workers N` starts it again"))  # fmt: skip
    return statuses
