"""`pinpipe demo` end to end in a fresh data dir: every record in Kafka and the lake, answers, nothing left running."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_demo_runs_and_stops_everything(traversable_dir: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINPIPE_")}
    env["PINPIPE_DATA_DIR"] = str(traversable_dir / "data")
    result = subprocess.run(
        [sys.executable, "-m", "pinpipe.cli", "demo", "--posts", "40", "--rate", "400"],
        cwd=traversable_dir, env=env, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every acknowledged record is in Kafka" in result.stdout
    assert "pinterest_data 11,154 rows" in result.stdout
    # 40 posts = 40 records in each of the three topics, 120 in all.
    assert "│ total        │ 120" in result.stdout
    # ... and the lake sink wrote each of them once.
    for table in ("pin", "geo", "user"):  # table | dt partitions | files | records
        assert re.search(rf"│ {table}\s+│ 1\s+│ \d+\s+│ 40\s+│", result.stdout), table
    assert "lake verify: every offset once" in result.stdout
    # ... the stream job upserted every key into PostgreSQL ...
    assert "every key is in PostgreSQL" in result.stdout
    assert re.search(r"│ pinpipe\.pin\s+│ (\d+)\s+│ \1\s+│", result.stdout)  # rows == distinct keys
    # ... and the batch job cleaned them and published the answers.
    assert "data-quality checks: passed" in result.stdout
    assert re.search(r"│ pin\s+│ 40\s+│ 0\s+│ \d+\s+│ \d+\s+│", result.stdout)  # raw, quarantined, ...
    assert "answers written to the lake and to PostgreSQL" in result.stdout
    # The broker and PostgreSQL ran with the demo's working directory and data dir: none is left.
    assert processes_of(traversable_dir) == set()
