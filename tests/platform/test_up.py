"""`pinpipe up` end to end: real processes in a fresh data dir on free ports, the emulator at
50 posts/s; components healthy, events reach the lake and PostgreSQL, a killed component is
restarted, SIGTERM stops everything with no process left and no record lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pyarrow.parquet as pq
import pytest

from pinpipe.config import load_settings
from pinpipe.processes import pid_is_alive
from pinpipe.services.postgres import EmbeddedPostgres
from tests.speed.conftest import TEST_WARMUP_ROWS

pytestmark = pytest.mark.integration


def until(condition, timeout_s: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"pinpipe up exited with {process.returncode} while waiting: {what}")
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def read_state(data_dir: Path) -> dict | None:
    try:
        return json.loads((data_dir / "run" / "up.json").read_text())
    except (OSError, ValueError):
        return None


def lake_values(data_dir: Path) -> dict[str, list[str]]:
    """Raw values in the lake per table (pin, geo, user; the dead-letter table apart)."""
    values: dict[str, list[str]] = {}
    for path in sorted((data_dir / "lake" / "raw").glob("*/dt=*/*.parquet")):
        table = path.parent.parent.name
        values.setdefault(table, []).extend(pq.read_table(path, columns=["value"]).column("value").to_pylist())
    return values


def live(dashboard: str) -> dict:
    try:
        return httpx.get(f"{dashboard}/api/live", timeout=5).json()
    except httpx.HTTPError:
        return {}


def test_up_runs_everything_and_stops_without_losing_a_record(traversable_dir):
    data_dir = traversable_dir
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PINPIPE_")},
        "PINPIPE_DATA_DIR": str(data_dir),
        "PINPIPE_LAKE__ROTATE_AGE_S": "2",  # files every 2 s, so the lake fills during the test
        "PINPIPE_UP__RESTART_BACKOFF_S": "0.2",
        "PINPIPE_SPEED__WARMUP_ROWS": str(TEST_WARMUP_ROWS),
    }
    command = [sys.executable, "-m", "pinpipe.cli", "up", "--emulate", "50", "--api-port", "0",
               "--dashboard-port", "0", "--lake-metrics-port", "0", "--stream-metrics-port", "0"]
    log = (data_dir / "up.out").open("wb")
    up = subprocess.Popen(command, cwd=data_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    pids: set[int] = set()
    try:
        state = until(lambda: (s := read_state(data_dir)) and s["phase"] == "running" and s,
                      180, "every component healthy", up)
        components = {c["name"]: c for c in state["components"]}
        assert {"broker", "postgres", "api", "lake-sink", "stream", "dashboard", "emulator"} <= set(components)
        pids |= {c["pid"] for c in components.values() if c.get("pid")}
        pids |= {json.loads((data_dir / "run" / f"{name}.json").read_text())["pid"] for name in ("broker", "postgres")}
        assert all(pid_is_alive(pid) for pid in pids)
        assert set(state["started_services"]) == {"broker", "postgres"}
        dashboard = components["dashboard"]["address"]

        # Events flow: the API accepts, the lake fills, the stream writes PostgreSQL.
        until(lambda: sum(len(v) for v in lake_values(data_dir).values()) > 0, 60, "records in the lake", up)
        until(lambda: live(dashboard).get("rows", {}).get("pin", 0) > 0, 120, "pin rows in PostgreSQL", up)
        figures = live(dashboard)
        assert figures["ingest"]["accepted_total"] > 0
        # The dashboard reads as the reader login, which can only SELECT (services/test_reader.py).
        server = EmbeddedPostgres(data_dir / "postgres")
        assert server.attach()
        with psycopg.connect(server.dsn) as conn:
            logins = conn.execute("SELECT DISTINCT usename FROM pg_stat_activity"
                                  " WHERE application_name = 'pinpipe-dashboard'").fetchall()
        assert logins == [("pinpipe_reader",)]
        assert all(c["up"] for c in figures["components"] if c["component"] in ("ingest", "lake-sink"))
        metrics = httpx.get(f"{dashboard}/metrics").text
        assert 'pinpipe_batch_runs_total{status="failed"} 0.0' in metrics

        status = subprocess.run([sys.executable, "-m", "pinpipe.cli", "status"], cwd=data_dir, env=env,
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("healthy") >= 5

        # A killed component is restarted by the supervisor (and status sees the new pid).
        old = components["dashboard"]["pid"]
        os.kill(old, signal.SIGKILL)
        restarted = until(
            lambda: next((c["pid"] for c in (read_state(data_dir) or {}).get("components", [])
                          if c["name"] == "dashboard" and c.get("pid") not in (None, old)), None),
            30, "the dashboard restarted", up,
        )
        pids.add(restarted)
        assert read_state(data_dir)["started_at"] == state["started_at"]  # saved again, same start
        until(lambda: live(dashboard).get("ingest", {}).get("up"), 30, "the restarted dashboard answers", up)

        # The API killed too: restarted, its counts start from zero again, so the drain must go
        # by the topics' offsets, not by what the new API accepted.
        old_api = components["api"]["pid"]
        os.kill(old_api, signal.SIGKILL)
        new_api = until(
            lambda: next((c["pid"] for c in (read_state(data_dir) or {}).get("components", [])
                          if c["name"] == "api" and c.get("pid") not in (None, old_api)), None),
            30, "the API restarted", up,
        )
        pids.add(new_api)
        api_url = components["api"]["address"]
        until(lambda: _ready(api_url), 60, "the restarted API ready", up)
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            code = up.wait(timeout=150)
        finally:
            if up.poll() is None:
                up.kill()
            log.close()
    output = (data_dir / "up.out").read_text()
    assert code == 0, output[-3000:]
    assert "dashboard exited" in output and "dashboard restarted" in output

    # No process left.
    until(lambda: not any(pid_is_alive(pid) for pid in pids), 10, "every process gone")
    assert read_state(data_dir) is None and not (data_dir / "run" / "broker.json").exists()

    # No record lost: records in Kafka (both API processes' acknowledged records) == records in
    # the lake == rows in PostgreSQL (deduplicated); the restarted API accepted some of them.
    last = json.loads((data_dir / "run" / "up-last-run.json").read_text())
    accepted = int(last["api"]["accepted"])
    values = lake_values(data_dir)
    assert accepted > 0
    in_kafka = {t: last["kafka"].get(f"pinpipe.{t}", 0) for t in ("pin", "geo", "user")}
    in_lake = {t: len(values.get(t, [])) for t in ("pin", "geo", "user")}
    assert in_lake == in_kafka, (in_lake, last, output[-2000:])
    assert sum(in_kafka.values()) > accepted  # the killed API's records are counted too
    keys = {
        "pin": {json.loads(v)["unique_id"] for v in values["pin"]},
        "geo": {json.loads(v)["ind"] for v in values["geo"]},
        "user": {json.loads(v)["ind"] for v in values["user"]},
    }
    from pinpipe.services.resolve import postgres_dsn

    settings = load_settings(data_dir=data_dir)
    with postgres_dsn(settings) as dsn, psycopg.connect(dsn) as conn:
        rows = {
            "pin": conn.execute("SELECT count(*) FROM pinpipe.pin").fetchone()[0],
            "geo": conn.execute("SELECT count(*) FROM pinpipe.geo").fetchone()[0],
            "user": conn.execute('SELECT count(*) FROM pinpipe."user"').fetchone()[0],
        }
    assert rows == {table: len(found) for table, found in keys.items()}


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_up_with_a_duration_stops_by_itself_after_the_emulator_finished(traversable_dir):
    """`up --duration`: the emulator posts for that long, then up drains and stops everything."""
    from tests.platform.test_demo import processes_of

    data_dir = traversable_dir
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PINPIPE_")},
        "PINPIPE_DATA_DIR": str(data_dir),
        "COLUMNS": "160",
    }
    command = [sys.executable, "-m", "pinpipe.cli", "up", "--emulate", "20", "--duration", "5s", "--no-stream",
               "--api-port", "0", "--dashboard-port", "0", "--lake-metrics-port", "0", "--stream-metrics-port", "0"]
    result = subprocess.run(command, cwd=data_dir, env=env, capture_output=True, text=True, timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Runs for 5 s, then stops" in output and "5 s are up: stopping" in output
    assert "emulator finished (exit 0)" in output

    last = json.loads((data_dir / "run" / "up-last-run.json").read_text())
    assert last["stopped_by"] == "duration"
    emulated, accepted = last["emulator"], int(last["api"]["accepted"])
    assert emulated["posts"] == 100 and emulated["failed"] == 0  # 20 posts/s for 5 s
    assert emulated["sent"] == emulated["accepted"] == accepted == 300
    assert {t: len(v) for t, v in lake_values(data_dir).items()} == {"pin": 100, "geo": 100, "user": 100}
    assert read_state(data_dir) is None and processes_of(data_dir) == set()
