"""The embedded broker is SIGKILLed under a detached `pinpipe up`: up starts it again on the same
port, the lake sink writes out what it had fetched (a 10-minute rotation: without that, nothing
would be in the lake), the API accepts posts again, and the new log's records join the lake in
files of their own. Real processes, no stream job."""

from __future__ import annotations

import json
import os
import signal
from contextlib import suppress

import httpx
import pyarrow.parquet as pq
import pytest

from pinpipe.lake.layout import parse_file_name
from tests.platform.test_up import lake_values, read_state, until
from tests.platform.test_up_lifecycle import health, pinpipe, processes_left

pytestmark = pytest.mark.integration


def broker_pid(data_dir) -> int | None:
    state = read_state(data_dir) or {"components": []}
    return next((c.get("pid") for c in state["components"] if c["name"] == "broker"), None)


def consumed(sink_metrics: str) -> float:
    try:
        text = httpx.get(sink_metrics, timeout=2).text
    except httpx.HTTPError:
        return -1
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("pinpipe_lake_records_consumed_total"))  # fmt: skip


@pytest.mark.timeout(360)
def test_a_killed_broker_is_restarted_and_what_the_sink_fetched_is_kept(traversable_dir):
    data_dir = traversable_dir
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PINPIPE_")},
        "PINPIPE_DATA_DIR": str(data_dir),
        "PINPIPE_LAKE__ROTATE_AGE_S": "600",
        "COLUMNS": "200",
    }
    try:
        started = pinpipe(data_dir, env, "up", "--detach", "--no-stream", "--api-port", "0",
                          "--dashboard-port", "0", "--lake-metrics-port", "0",
                          "--stream-metrics-port", "0", timeout_s=240)  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr
        components = {c["name"]: c for c in read_state(data_dir)["components"]}
        api, sink_metrics = components["api"]["address"], components["lake-sink"]["metrics_url"]
        first = pinpipe(data_dir, env, "emulate", "--base-url", api, "--count", "100",
                        "--rate", "200", "--seed", "1")  # fmt: skip
        assert first.returncode == 0, first.stdout + first.stderr
        until(lambda: consumed(sink_metrics) == 300, 30, "the sink to fetch the 300 records")
        assert sum(map(len, lake_values(data_dir).values())) == 0  # all still in the sink's memory

        old = broker_pid(data_dir)
        os.kill(old, signal.SIGKILL)
        until(lambda: sum(map(len, lake_values(data_dir).values())) == 300, 60,
              "the fetched records written out")  # fmt: skip
        until(lambda: broker_pid(data_dir) not in (None, old), 30, "up to start the broker again")
        until(lambda: health(pinpipe(data_dir, env, "status").stdout).get("lake-sink") == "healthy",
              60, "the sink healthy on the new broker")  # fmt: skip
        second = pinpipe(data_dir, env, "emulate", "--base-url", api, "--count", "20",
                         "--rate", "100", "--seed", "2")  # fmt: skip
        assert second.returncode == 0, second.stdout + second.stderr
        until(lambda: consumed(sink_metrics) >= 360, 60, "the sink to fetch the new log's records")
    finally:
        stopped = pinpipe(data_dir, env, "down", timeout_s=300)
        for pid in processes_left(data_dir):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    log = (data_dir / "logs" / "up.log").read_text()
    assert f"exited (pid {old}); starting it again" in log, log[-3000:]
    assert "an empty log" in log
    values = lake_values(data_dir)
    assert sum(map(len, values.values())) == 360
    stored = []  # (topic, partition, log generation, offset) of every raw record
    for path in (data_dir / "lake" / "raw").glob("*/dt=*/*.parquet"):
        parsed = parse_file_name(str(path))
        offsets = pq.read_table(path, columns=["offset"]).column("offset").to_pylist()
        stored += [(parsed.topic, parsed.partition, parsed.generation, o) for o in offsets]
    assert len(stored) == len(set(stored)) == 360  # no record twice
    assert sum(1 for *_, generation, _ in stored if generation == 1) == 60  # the new log's
    last = json.loads((data_dir / "run" / "up-last-run.json").read_text())
    assert last["restarts"]["broker"] == 1 and last["lost"] == []
