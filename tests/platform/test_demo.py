"""`pinpipe demo` end to end in a fresh data dir: a bounded `pinpipe up` with the emulator, the
batch job, a summary whose figures agree with each other, and nothing left running."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pinpipe.events import ANSWER_NAMES
from tests.speed.conftest import TEST_WARMUP_ROWS

pytestmark = pytest.mark.integration


def processes_of(directory: Path) -> set[int]:
    """Live (not zombie) processes working in ``directory`` or naming it on their command line."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("State:"))
        except (OSError, StopIteration):
            continue
        mine = cwd.startswith(str(directory)) or str(directory) in cmdline
        if mine and "Z" not in state.split()[1] and int(entry.name) != os.getpid():
            found.add(int(entry.name))
    return found


def number(text: str) -> int:
    return int(text.replace(",", ""))


def demo_env(directory: Path) -> dict[str, str]:
    """This environment without PINPIPE_* settings, with its data dir under ``directory``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINPIPE_")}
    env["PINPIPE_DATA_DIR"] = str(directory / "data")
    env["PINPIPE_SPEED__WARMUP_ROWS"] = str(TEST_WARMUP_ROWS)
    return env


def test_demo_runs_checks_and_stops_everything(traversable_dir: Path):
    env = demo_env(traversable_dir)
    env["COLUMNS"] = "160"  # no line wrapped in the middle of a figure
    result = subprocess.run(
        [sys.executable, "-m", "pinpipe.cli", "demo", "--duration", "15s", "--rate", "20", "--dashboard-port", "0"],
        cwd=traversable_dir, env=env, capture_output=True, text=True, timeout=300,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "pinterest_data 11,154 rows" in out
    assert "15 s are up: stopping" in out  # the bounded `pinpipe up` stopped itself, cleanly
    last_run = json.loads((traversable_dir / "data" / "run" / "up-last-run.json").read_text())
    assert last_run["stopped_by"] == "duration"

    # The emulator's posts, each three records, all accepted by the API ...
    emulator = re.search(r"emulator: ([\d,]+) posts, ([\d,]+) records sent: ([\d,]+) accepted, 0 rejected, 0 failed", out)
    assert emulator, out
    posts, sent, accepted = (number(g) for g in emulator.groups())
    assert posts > 100 and sent == 3 * posts and accepted == sent  # 20 posts/s for 15 s: about 300
    assert f"ingest API: {accepted:,} records accepted, 0 rejected" in out
    # ... are in Kafka, in the lake and in the Delta tables, each once; PostgreSQL has one row per
    # distinct key.
    keys_in_postgres = {}
    for table in ("pin", "geo", "user"):  # table | Kafka | lake | distinct keys | PostgreSQL | Delta | dead
        row = re.search(rf"│ {table}\s+│" + r" ([\d,]+)\s+│" * 6, out)
        assert row, (table, out)
        kafka, lake, keys, rows, delta, dead = (number(g) for g in row.groups())
        assert kafka == lake == delta == posts and dead == 0, table
        assert 0 < keys <= posts and rows == keys, table
        keys_in_postgres[table] = rows
    assert re.search(rf"│ total\s+│ {accepted:,}\s+│ {accepted:,}\s+│", out)
    assert "✓ Kafka holds every record the API accepted" in out
    assert "✓ the lake holds every Kafka record exactly once" in out
    assert "✓ PostgreSQL holds every key" in out
    assert "✓ the stream's Delta tables hold every Kafka record that parsed, once" in out
    streams = re.search(r"✓ the stream's Delta tables \(latest row per key\) equal the speed layer \(PostgreSQL\) "
                        r"value for value: pin ([\d,]+), geo ([\d,]+), user ([\d,]+) rows equal", " ".join(out.split()))
    assert streams, out
    assert [number(n) for n in streams.groups()] == [keys_in_postgres[t] for t in ("pin", "geo", "user")]
    assert re.search(r"stream latency, broker acknowledgement to PostgreSQL row: p50 [\d.]+ s, p99 [\d.]+ s", out)
    # The batch job cleaned every record and answered the nine questions.
    assert re.search(rf"│ pin\s+│ {posts}\s+│ 0\s+│ \d+\s+│ \d+\s+│", out)  # raw, quarantined, ...
    assert "data-quality checks: passed" in out
    for name in ANSWER_NAMES:
        assert re.search(rf"^\s*{name}(\s|$)", out, re.MULTILINE), name
    assert "answers written to the lake and to PostgreSQL" in out
    equal = re.search(r"✓ the speed layer \(PostgreSQL\) equals the batch layer \(lake clean tables\) value for "
                      r"value: pin ([\d,]+), geo ([\d,]+), user ([\d,]+) rows equal", " ".join(out.split()))
    assert equal, out
    # ... every key, each row equal in both layers
    assert [number(n) for n in equal.groups()] == [keys_in_postgres[t] for t in ("pin", "geo", "user")]
    assert "every check passed" in out
    # Every process ran with the demo's working directory or data dir: none is left.
    assert processes_of(traversable_dir) == set()


def test_demo_refuses_a_broker_holding_earlier_records(traversable_dir: Path):
    env = demo_env(traversable_dir)
    cli = [sys.executable, "-m", "pinpipe.cli"]
    up = subprocess.run([*cli, "services", "up"], cwd=traversable_dir, env=env, capture_output=True,
                        text=True, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        result = subprocess.run([*cli, "demo", "--duration", "5s"], cwd=traversable_dir, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1
        assert "the embedded broker is already running" in " ".join(result.stdout.split())
        # and it left the user's services running
        status = subprocess.run([*cli, "services", "status"], cwd=traversable_dir, env=env,
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        subprocess.run([*cli, "services", "down"], cwd=traversable_dir, env=env, timeout=120)
    assert processes_of(traversable_dir) == set()


def test_keep_running_serves_the_dashboard_until_ctrl_c(traversable_dir: Path):
    env = demo_env(traversable_dir)
    env["COLUMNS"] = "200"
    log = traversable_dir / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "pinpipe.cli", "demo", "--duration", "5s", "--rate", "20", "--no-batch",
             "--dashboard-port", "0", "--keep-running"],
            cwd=traversable_dir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        state_file = traversable_dir / "data" / "run" / "up.json"
        deadline = time.monotonic() + 240
        dashboard = None
        while dashboard is None:
            assert demo.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            text = log.read_text(errors="replace")
            address = re.search(r"keeping everything up: dashboard at (http://127\.0\.0\.1:\d+)", text)
            try:
                state = json.loads(state_file.read_text())
            except (OSError, ValueError):  # not written yet
                state = {}
            if address and state.get("phase") == "running":
                dashboard = address.group(1)
            time.sleep(0.5)
        assert "every check passed" in log.read_text()
        # the second, unbounded `pinpipe up`: the emulator keeps posting and the page is served
        assert "emulator" in {component["name"] for component in state["components"]}
        assert httpx.get(f"{dashboard}/api/live", timeout=10).status_code == 200
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        assert demo.wait(timeout=120) == 0, log.read_text()
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    assert processes_of(traversable_dir) == set()
