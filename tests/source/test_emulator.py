"""Emulator behaviour against a real HTTP server: retries, Retry-After, rejections, bounds, seeds."""

from __future__ import annotations

import itertools
import json
import random
import time

import pytest

from pinpipe.source.emulator import Emulator, EmulatorPlan, retry_delay
from pinpipe.source.tables import SourceTables
from pinpipe.source.wire import WireFormat
from tests.source.httpserver import RecordingServer, Reply
from tests.source.test_wire import one_row_tables


def plan(server, **overrides) -> EmulatorPlan:
    values = dict(base_url=server.base_url, wire_format=WireFormat.LEGACY, rate=1000, count=1, concurrency=1,
                  max_retries=3)
    values.update(overrides)
    return EmulatorPlan(**values)


def test_retries_503_honouring_retry_after():
    calls = itertools.count()

    def respond(received):
        # The first request of the run is refused once with Retry-After: 1.
        return Reply(503, b'{"error_code":50301,"message":"broker unavailable"}', (("Retry-After", "1"),)) \
            if next(calls) == 0 else Reply()

    with RecordingServer(respond) as server:
        stats = Emulator(one_row_tables(), plan(server)).run()
    assert stats.as_dict() == {"posts": 1, "requests": 3, "sent": 3, "accepted": 3, "rejected": 0,
                               "retried": 1, "failed": 0}
    first, second = server.received[0], server.received[1]
    assert first.body == second.body and first.path == second.path == "/pin/"
    assert second.at - first.at >= 0.95


def test_gives_up_after_max_retries_and_counts_failed():
    with RecordingServer(lambda received: Reply(429, b"{}", (("Retry-After", "0"),))) as server:
        stats = Emulator(one_row_tables(), plan(server, max_retries=2)).run()
    assert stats.failed == 3 and stats.accepted == 0 and stats.retried == 6
    assert len(server.received) == 9  # 3 requests x (1 try + 2 retries)


def test_4xx_is_rejected_not_retried():
    with RecordingServer(lambda received: Reply(422, b'{"error_code":42201,"message":"bad"}')) as server:
        stats = Emulator(one_row_tables(), plan(server)).run()
    assert (stats.rejected, stats.retried, stats.failed, len(server.received)) == (3, 0, 0, 3)


def test_rest_proxy_per_record_errors_are_counted_rejected():
    reply = json.dumps({"offsets": [{"partition": None, "offset": None, "error_code": 42201, "error": "bad"}],
                        "key_schema_id": None, "value_schema_id": None}).encode()
    with RecordingServer(lambda received: Reply(200, reply)) as server:
        stats = Emulator(one_row_tables(), plan(server, wire_format=WireFormat.REST_PROXY)).run()
    assert (stats.accepted, stats.rejected) == (0, 3)


def test_connection_refused_is_failed_after_retries():
    with RecordingServer() as server:
        url = server.base_url
    stats = Emulator(one_row_tables(), EmulatorPlan(base_url=url, rate=1000, count=1, max_retries=1,
                                                    wire_format=WireFormat.LEGACY)).run()
    assert stats.failed == 3 and stats.accepted == 0


def test_duration_bounds_the_run_and_rate_paces_it():
    with RecordingServer() as server:
        begun = time.monotonic()
        stats = Emulator(one_row_tables(), plan(server, rate=20, count=None, duration_s=1.0, concurrency=4)).run()
        elapsed = time.monotonic() - begun
    # 20 posts/s for 1 s: posts due at 0, 0.05, ... 0.95 s.
    assert stats.posts == 20 and stats.accepted == 60
    assert 0.9 <= elapsed < 3.0
    assert stats.behind_s < 0.5


def test_a_slow_api_puts_the_emulator_behind_and_the_summary_says_so():
    from rich.console import Console

    from pinpipe.source.emulation import print_summary

    def slow(received):
        time.sleep(0.05)
        return Reply()

    # 100 posts/s with one request in flight, each post three requests of 50 ms: 20 posts are
    # due within 0.2 s but take about 3 s, so the last leaves about 2.8 s late.
    with RecordingServer(slow) as server:
        stats = Emulator(one_row_tables(), plan(server, rate=100, count=20, concurrency=1)).run()
    assert stats.accepted == 60
    assert 2.0 < stats.behind_s < 5.0
    console = Console(record=True, width=200)
    print_summary(stats, console)
    assert "behind its rate" in console.export_text()


def test_same_seed_same_sequence_of_rows():
    rows = [dict(index=i, unique_id=f"id-{i}") for i in range(50)]
    tables = SourceTables(pin=rows, geo=[{"ind": i} for i in range(50)], user=[{"ind": i} for i in range(50)])

    def sequence(seed):
        with RecordingServer() as server:
            Emulator(tables, plan(server, count=30, seed=seed)).run()
        return [json.loads(r.body)["index"] for r in server.received if r.path == "/pin/"]

    first = sequence(1)
    assert len(first) == 30 and sequence(1) == first and sequence(2) != first


def test_retry_delay_prefers_retry_after():
    rng = random.Random(0)
    assert retry_delay(1, "2", rng) == 2.0
    assert retry_delay(1, "999", rng) == 30.0
    assert 0.05 <= retry_delay(1, None, rng) <= 0.1
    assert 0.4 <= retry_delay(4, None, rng) <= 0.8


def test_plan_needs_a_bound():
    with pytest.raises(ValueError, match="count or a duration"):
        EmulatorPlan(base_url="http://127.0.0.1:1")


def test_row_draws_are_independent_of_the_generator_with_the_same_seed():
    """The emulator and the generator share a seed; the posted rows must still be a fair sample.

    DATA_SPEC: 895 story-format descriptions in 11,154 rows (8 %). A draw correlated with the
    generator's own choices once posted story rows half of the time.
    """
    from pinpipe.source.generator import generate_tables

    tables = generate_tables(42, 11_154)
    emulator = Emulator(tables, EmulatorPlan(base_url="http://127.0.0.1:1", count=2000, seed=42))
    posts = [post for slot in range(2000) for post in [emulator._next_requests(slot)]]
    pins = [json.loads(requests[0].body)["records"][0]["value"] for requests in posts]
    story = sum(pin["description"] == "No description available Story format" for pin in pins)
    assert 100 <= story <= 230  # 8 % of 2,000 is 160


def test_a_stopped_emulator_finishes_what_is_in_flight_and_counts_it():
    import threading

    stop = threading.Event()
    with RecordingServer() as server:
        emulator = Emulator(one_row_tables(), plan(server, rate=50, count=None, duration_s=60, concurrency=2),
                            on_progress=lambda stats: stats.requests >= 30 and stop.set(), stop=stop)
        began = time.monotonic()
        stats = emulator.run()
        received = len(server.received)
    assert time.monotonic() - began < 10  # not the whole minute
    # Every request that started was answered and counted; nothing started after the stop.
    assert stats.requests == received and 30 <= received <= 30 + 2 * 3
    assert stats.sent == stats.accepted == received and stats.failed == 0


@pytest.mark.integration
def test_the_emulate_command_writes_its_counts_when_stopped_by_sigterm(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    with RecordingServer() as server:
        out = tmp_path / "stats.json"
        command = [sys.executable, "-m", "pinpipe.cli", "emulate", "--base-url", server.base_url,
                   "--format", "legacy", "--rate", "20", "--duration", "600", "--stats-json", str(out),
                   "--stats-dir", str(tmp_path / "instances")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PINPIPE_")}
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while len(server.received) < 20:  # it is posting
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        received = len(server.received)
    counts = json.loads(out.read_text())
    assert counts["sent"] == counts["accepted"] == received and counts["failed"] == 0
    assert counts["posts"] * 3 == counts["sent"]  # legacy: three requests, one record each, a post
    (instance,) = (tmp_path / "instances").glob("*.json")
    assert json.loads(instance.read_text()) == counts
