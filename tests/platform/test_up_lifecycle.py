"""`pinpipe up --detach`, `pinpipe status`, `pinpipe down`, and `up --batch-every`: real processes
in a fresh data dir on free ports, without the stream job (the batch job is the only Spark).

One detached run: status reports every component healthy, a bounded emulation fills the lake,
the batch job runs on its short schedule and is recorded in ``pinpipe.batch_run`` as up's and
successful, then `pinpipe down` exits 0, no process of the run is left, and the batch run it
interrupted is recorded as cancelled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import psycopg
import pytest

from pinpipe.config import load_settings
from pinpipe.processes import pid_is_alive
from pinpipe.services.resolve import postgres_dsn
from tests.speed.conftest import TEST_WARMUP_ROWS
from tests.platform.test_up import lake_values, read_state, until

pytestmark = pytest.mark.integration

POSTS = 300  # each post is a pin, a geo and a user record


def pinpipe(
    data_dir: Path, env: dict[str, str], *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pinpipe.cli", *args], check=False, cwd=data_dir,
                          env=env, capture_output=True, text=True, timeout=timeout_s)  # fmt: skip


def run_processes(data_dir: Path) -> dict[int, str]:
    """Live processes started for ``data_dir`` (pid -> command line): every process of the run
    (up, its components, the broker, PostgreSQL, the batch job and its JVM) inherits
    ``PINPIPE_DATA_DIR``, whoever started it."""
    marker = f"PINPIPE_DATA_DIR={data_dir}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in environ and pid_is_alive(int(entry.name)):
            found[int(entry.name)] = command.strip()
    return found


def processes_left(data_dir: Path, grace_s: float = 5.0) -> dict[int, str]:
    """The run's processes still alive ``grace_s`` after it was stopped (a JVM exits after its
    Python driver, PostgreSQL's workers after the postmaster)."""
    deadline = time.monotonic() + grace_s
    while (left := run_processes(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.25)
    return left


def health(status_output: str) -> dict[str, str]:
    """Component -> health column of `pinpipe status`'s table."""
    rows = {}
    for line in status_output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if len(cells) == 7 and cells[0] not in ("component", ""):
            rows[cells[0]] = cells[1]
    return rows


def up_runs(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT status, error, dates, finished_at IS NOT NULL FROM pinpipe.batch_run"
            " WHERE origin = 'up' ORDER BY run_id"
        ).fetchall()


@pytest.mark.timeout(420)
def test_detached_up_runs_the_batch_on_schedule_and_goes_down_leaving_no_process(traversable_dir):
    data_dir = traversable_dir
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PINPIPE_")},
        "PINPIPE_DATA_DIR": str(data_dir),
        "PINPIPE_LAKE__ROTATE_AGE_S": "1",  # the posts are in the lake within seconds
        "PINPIPE_SPEED__WARMUP_ROWS": str(TEST_WARMUP_ROWS),
        "PINPIPE_BATCH__SHUFFLE_PARTITIONS": "2",
        "PINPIPE_BATCH__DRIVER_MEMORY": "1g",
        "COLUMNS": "200",  # status's table unabridged
    }
    log = data_dir / "logs" / "up.log"
    seen: dict[int, str] = {}
    try:
        started = pinpipe(data_dir, env, "up", "--detach", "--no-stream", "--batch-every", "20s",
                          "--api-port", "0", "--dashboard-port", "0", "--lake-metrics-port", "0",
                          "--stream-metrics-port", "0", timeout_s=240)  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr
        state = read_state(data_dir)
        assert state is not None and state["phase"] == "running"
        components = {c["name"]: c for c in state["components"]}
        assert set(components) == {"broker", "postgres", "api", "lake-sink", "dashboard", "batch"}
        seen = run_processes(data_dir)
        assert {state["pid"]} | {c["pid"] for c in components.values() if c.get("pid")} <= set(seen)

        status = pinpipe(data_dir, env, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert health(status.stdout) == {
            "broker": "healthy", "postgres": "healthy", "api": "healthy", "lake-sink": "healthy",
            "dashboard": "healthy", "batch": "-",
        }  # fmt: skip

        emulated = pinpipe(data_dir, env, "emulate", "--base-url", components["api"]["address"],
                           "--count", str(POSTS), "--rate", "300", "--seed", "42")  # fmt: skip
        assert emulated.returncode == 0, emulated.stdout + emulated.stderr
        until(
            lambda: sum(map(len, lake_values(data_dir).values())) == 3 * POSTS,
            30,
            "every record in the lake",
        )

        # --batch-every 20s: the first run starts 20 s after up was running, and is recorded as up's.
        def batch_component() -> dict:
            return next(c for c in (read_state(data_dir) or {"components": []})["components"] if c["name"] == "batch")

        running = until(lambda: batch_component().get("pid"), 60, "the batch run's pid in up.json")
        assert "running since" in batch_component()["note"] or not pid_is_alive(running)
        with postgres_dsn(load_settings(data_dir=data_dir)) as dsn:
            until(
                lambda: any(finished for *_, finished in up_runs(dsn)), 180, "a finished batch run"
            )
            first = up_runs(dsn)[0]
            with psycopg.connect(dsn) as conn:
                [published] = conn.execute(
                    "SELECT count(*) FROM pinpipe.top_category_by_country"
                ).fetchone()
        assert first == ("success", None, "all", True), log.read_text()[-3000:]
        assert published > 0  # the answers of the emulated posts
        assert (data_dir / "lake" / "clean" / "pin").is_dir()
        until(lambda: "batch run succeeded" in log.read_text(), 10, "up sees the run's exit code")
        assert "last run succeeded" in batch_component()["note"] or batch_component().get("pid")
        # The next batch run is likely on, with its JVM: down stops it.
        seen |= run_processes(data_dir)
    finally:
        try:
            stopped = pinpipe(data_dir, env, "down", timeout_s=300)
        finally:
            left = processes_left(data_dir)
            for pid in left:  # never leave a stray process, even when down failed
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert left == {}, left
    assert not any(pid_is_alive(pid) for pid in seen)
    assert read_state(data_dir) is None and not (data_dir / "run" / "broker.json").exists()
    assert not (data_dir / "run" / "postgres.json").exists()
    last = json.loads((data_dir / "run" / "up-last-run.json").read_text())
    assert last["api"]["accepted"] == 3 * POSTS  # a clean stop: up drained and wrote its figures
    assert pinpipe(data_dir, env, "status").returncode == 1  # "pinpipe up is not running"
    # A batch run that down interrupted is cancelled: neither a failure nor left running.
    with postgres_dsn(load_settings(data_dir=data_dir)) as dsn:  # PostgreSQL again, for the block
        statuses = [status for status, *_ in up_runs(dsn)]
    assert statuses[0] == "success" and set(statuses) <= {"success", "cancelled"}, statuses


def test_up_on_a_new_broker_archives_and_empties_the_speed_tables(traversable_dir):
    from pinpipe.services.postgres import EmbeddedPostgres
    from pinpipe.store.schema import apply_migrations

    data_dir = traversable_dir
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PINPIPE_")}, "PINPIPE_DATA_DIR": str(data_dir)}
    # An earlier run's speed layer: PostgreSQL still up, its broker (memory storage) gone.
    server = EmbeddedPostgres(data_dir / "postgres")
    server.start()
    try:
        apply_migrations(server.dsn)
        with psycopg.connect(server.dsn) as conn:
            conn.execute("INSERT INTO pinpipe.dead_letter (topic, kafka_partition, kafka_offset, reason, value)"
                         " VALUES ('pinpipe.geo', 1, 41, 'latitude: out of range', '{\"latitude\": 900}')")
        result = pinpipe(data_dir, env, "up", "--no-stream", "--duration", "1s", "--api-port", "0",
                         "--dashboard-port", "0", "--lake-metrics-port", "0", timeout_s=120)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr
        assert "moved the earlier speed tables (1 row)" in result.stdout

        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT count(*) FROM pinpipe.dead_letter").fetchone() == (0,)
        (archived,) = (data_dir / "archive").glob("*/speed/dead_letter.csv")
        header, row = archived.read_text().splitlines()
        assert header.startswith("topic,kafka_partition,kafka_offset,")
        assert row.startswith("pinpipe.geo,1,41,") and "latitude: out of range" in row
    finally:
        server.stop()


@pytest.mark.timeout(300)
def test_down_after_a_killed_up_stops_what_up_started_and_not_the_services_it_found(traversable_dir):
    """`pinpipe services up` first, then a detached up, SIGKILLed: its API, sink and dashboard
    keep running. A new up refuses to start over them; down stops them, and leaves the broker and
    PostgreSQL that were there before up running."""
    from pinpipe.services.state import read_record

    data_dir = traversable_dir
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PINPIPE_")},
           "PINPIPE_DATA_DIR": str(data_dir)}
    up_args = ("up", "--detach", "--no-stream", "--api-port", "0", "--dashboard-port", "0",
               "--lake-metrics-port", "0", "--stream-metrics-port", "0")
    try:
        services = pinpipe(data_dir, env, "services", "up", timeout_s=180)
        assert services.returncode == 0, services.stdout + services.stderr
        broker = read_record(data_dir / "run", "broker").pid
        postmaster = read_record(data_dir / "run", "postgres").pid

        started = pinpipe(data_dir, env, *up_args, timeout_s=240)
        assert started.returncode == 0, started.stdout + started.stderr
        state = read_state(data_dir)
        children = {c["name"]: c["pid"] for c in state["components"] if c["name"] in ("api", "lake-sink", "dashboard")}
        assert len(children) == 3 and all(children.values())
        os.kill(state["pid"], signal.SIGKILL)
        until(lambda: not pid_is_alive(state["pid"]), 10, "up gone")
        assert all(pid_is_alive(pid) for pid in children.values())  # what a killed up leaves

        again = pinpipe(data_dir, env, *up_args, timeout_s=60)
        assert again.returncode == 1 and "pinpipe down" in again.stdout, again.stdout + again.stderr
        assert f"api (pid {children['api']})" in again.stdout.replace("\n", " ")

        stopped = pinpipe(data_dir, env, "down", timeout_s=120)
        assert stopped.returncode == 0 and "is gone" in stopped.stdout, stopped.stdout + stopped.stderr
        assert not any(pid_is_alive(pid) for pid in children.values())
        assert pid_is_alive(broker) and pid_is_alive(postmaster)  # not up's to stop
        status = pinpipe(data_dir, env, "services", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert pinpipe(data_dir, env, "down").stdout.strip() == "pinpipe up is not running"
    finally:
        pinpipe(data_dir, env, "down", timeout_s=120)
        pinpipe(data_dir, env, "services", "down", timeout_s=120)
        for pid in processes_left(data_dir):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(300)
def test_status_asks_postgresql_itself_so_a_restarted_server_is_healthy(traversable_dir):
    """PostgreSQL restarted under a running up gets a new pid: status says healthy (it answers),
    with the new pid, and not healthy while it is stopped."""
    from pinpipe.services.resolve import embedded_postgres

    data_dir = traversable_dir
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PINPIPE_")},
           "PINPIPE_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    settings = load_settings(data_dir=data_dir)
    try:
        started = pinpipe(data_dir, env, "up", "--detach", "--no-stream", "--api-port", "0",
                          "--dashboard-port", "0", "--lake-metrics-port", "0",
                          "--stream-metrics-port", "0", timeout_s=240)  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr
        server = embedded_postgres(settings)
        assert server.attach()
        old = server.pid
        server.stop()
        stopped = pinpipe(data_dir, env, "status")
        assert health(stopped.stdout)["postgres"] == "down" and stopped.returncode == 1, stopped.stdout
        server = embedded_postgres(settings)
        server.start()
        assert server.pid != old
        status = pinpipe(data_dir, env, "status")
        assert health(status.stdout)["postgres"] == "healthy", status.stdout
        assert str(server.pid) in status.stdout
    finally:
        pinpipe(data_dir, env, "down", timeout_s=120)
        for pid in processes_left(data_dir):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
