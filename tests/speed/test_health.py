"""The stream job's health and loss figures from its metrics, and the source's journal."""

from __future__ import annotations

import json

from prometheus_client import generate_latest

from pinpipe.speed.checkpoint import committed_offsets
from pinpipe.speed.health import checkpoint_losses, stream_health, stream_losses
from pinpipe.speed.journal import LostRange, SourceJournal, lost_ranges
from pinpipe.speed.offsets import mark_log, split_log
from pinpipe.speed.prom import StreamMetrics

NOW = 1_800_000_000.0


def text(metrics: StreamMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_alive_without_a_query_is_unhealthy():
    metrics = StreamMetrics()
    health = stream_health(text(metrics), now=NOW)
    assert not health and "no query" in health.reason


def test_a_running_query_without_progress_is_unhealthy_and_says_since_when():
    metrics = StreamMetrics()
    metrics.query_active.set(1)
    assert not stream_health(text(metrics), now=NOW)
    metrics.progressed(NOW - 100)
    metrics.unreachable_since.set(NOW - 90)
    health = stream_health(text(metrics), now=NOW, max_age_s=60)
    assert not health
    assert "for 100 s" in health.reason and "not answered for 90 s" in health.reason


def test_recent_progress_is_healthy():
    metrics = StreamMetrics()
    metrics.query_active.set(1)
    metrics.progressed(NOW - 2)
    metrics.progressed(NOW - 30)  # an older one does not move it back
    health = stream_health(text(metrics), now=NOW)
    assert health and "2.0 s ago" in health.reason


def test_unreadable_metrics_are_unhealthy():
    assert not stream_health("http://127.0.0.1:9/metrics", timeout_s=0.5)


def test_offsets_keep_their_log_mark_and_old_maps_read_without_one():
    stored = json.loads(json.dumps(mark_log({"t": {"0": 5}}, "c-1", {"t": {"0": 0}, "u": {}})))
    assert stored == {"t": {"0": 5}, "@log": {"cluster": "c-1", "from": {"t": {"0": 0}}}}
    assert split_log(stored) == ({"t": {"0": 5}}, {"cluster": "c-1", "from": {"t": {"0": 0}}})
    assert split_log({"t": {"0": 5}}) == ({"t": {"0": 5}}, {})


def test_lost_ranges_run_from_the_processed_offset_to_the_end_last_seen():
    processed = {"t": {"0": 10, "1": 4}, "u": {"0": 3}}
    seen = {"t": {"0": 25, "1": 4}}
    keys = {("t", 0), ("t", 1), ("u", 0), ("v", 0)}
    assert lost_ranges(processed, seen, keys) == [
        LostRange("t", 0, 10, 25), LostRange("t", 1, 4, 4), LostRange("u", 0, 3, None)
    ]
    assert [r.records for r in lost_ranges(processed, seen, keys)] == [15, 0, 0]


def test_journal_events_and_state_become_metrics(tmp_path):
    journal = SourceJournal(tmp_path / "journal")
    metrics = StreamMetrics()
    journal.append_event("log_restart", [LostRange("t", 0, 10, 25), LostRange("u", 0, 3, None)])
    journal.write_state(at=NOW - 1, idle=True, cluster="c-2", seen={}, unreachable_since=None)
    metrics.follow(journal)
    journal.append_event("range_lost", [LostRange("t", 1, 0, 7)])
    metrics.follow(journal)
    metrics.follow(journal)  # nothing new: counted once
    losses = stream_losses(text(metrics))
    assert losses.log_restarts == 1
    assert losses.records_lost == {"t": 22}
    assert losses.partitions_end_unknown == {"u": 1}
    metrics.query_active.set(1)
    assert stream_health(text(metrics), now=NOW)  # the idle trigger counts as progress


def test_checkpoint_losses_read_the_journal_without_a_job(tmp_path):
    journal = SourceJournal(tmp_path / "pinpipe-source")
    journal.append_event("log_restart", [LostRange("t", 0, 10, 25), LostRange("u", 0, 3, None)])
    journal.append_event("range_lost", [LostRange("t", 1, 0, 7)])
    losses = checkpoint_losses(f"file:{tmp_path}")
    assert (losses.log_restarts, losses.records_lost, losses.partitions_end_unknown) == (1, {"t": 22}, {"u": 1})
    assert checkpoint_losses("s3://bucket/ckpt").log_restarts == 0


def test_committed_offsets_skip_the_log_mark(tmp_path):
    (tmp_path / "commits").mkdir()
    (tmp_path / "offsets").mkdir()
    (tmp_path / "commits" / "0").write_text("v1\n{}\n")
    source = mark_log({"t": {"0": 5, "1": 2}}, "c-1", {"t": {"0": 0}})
    (tmp_path / "offsets" / "0").write_text(f"v1\n{{}}\n{json.dumps(source)}\n")
    assert committed_offsets(str(tmp_path)) == {("t", 0): 5, ("t", 1): 2}
