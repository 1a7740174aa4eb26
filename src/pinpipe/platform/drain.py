"""Draining before ``pinpipe up`` stops the consumers: wait until the lake sink and the stream job
have every record the topics hold (by offsets, which restarts do not reset), and the final
figures (the API's, the emulator's)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pinpipe.config import Settings
from pinpipe.platform.run import UpRun
from pinpipe.platform.state import EMULATOR_STATS_DIR

if TYPE_CHECKING:
    pass

CONSUMER_DRAIN_S = 60.0


def _api_totals(url: str | None, attempts: int = 5) -> dict:
    """The ingest API's record totals from its /metrics ({} if it cannot be scraped after
    ``attempts``)."""
    from pinpipe.serve.dashboard.scrape import scrape

    if not url:
        return {}
    for attempt in range(attempts):
        result = scrape(url, timeout_s=5.0)
        if result.ok:
            break
        time.sleep(0.5 * (attempt + 1))
    else:
        return {}
    return {
        "accepted": result.total("pinpipe_ingest_records_total", outcome="accepted"),
        "rejected": result.total("pinpipe_ingest_records_total", outcome="rejected"),
        "failed": result.total("pinpipe_ingest_records_total", outcome="failed"),
    }


def _stream_progress_since(dsn: str, since: object) -> tuple[int, int] | None:
    """Micro-batches the stream job committed since ``since`` (PostgreSQL time), and the records
    they wrote; None when PostgreSQL cannot be read."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT count(*), coalesce(sum(records), 0) FROM pinpipe.stream_batch WHERE committed_at >= %s",
                (since,),
            ).fetchone()
    except Exception:
        return None
    return None if row is None else (int(row[0]), int(row[1]))


def checkpoint_is_empty(settings: Settings) -> bool:
    """True when the stream job starts a new query (no local checkpoint yet)."""
    from pinpipe.speed.job import checkpoint_location

    location = checkpoint_location(settings)
    if "://" in location.removeprefix("file://"):
        return False  # a remote checkpoint: not looked into
    path = Path(location.removeprefix("file://"))
    return not path.exists() or not any(path.iterdir())


def wait_for_first_micro_batch(run: UpRun) -> None:
    """Before the emulator starts: wait (bounded) until the stream job's new query has committed
    its first micro-batch, so that the stream latency measured is the stream's, not Spark's start.

    A new query runs micro-batch 0 as soon as it runs, even on empty topics. (A resumed one runs
    a micro-batch only for new data: this is called for a new query only.)
    """
    child = run.supervisor.children.get("stream") if run.supervisor else None
    timeout_s = run.settings.up.health_timeout_s
    deadline = time.monotonic() + timeout_s
    with run.console.status("stream: waiting for Spark to run the query's first micro-batch"):
        while time.monotonic() < deadline and not run.stop.is_set() and child is not None and child.alive():
            progress = _stream_progress_since(run.dsn, run.pg_started_at)
            if progress is not None and progress[0] > 0:
                run.event("stream", "query running (first micro-batch committed)")
                return
            time.sleep(0.5)
    if not run.stop.is_set():
        run.event("stream", f"no micro-batch committed within {timeout_s:.0f} s; starting the emulator anyway")


def drain(run: UpRun) -> dict:
    """After the source stopped: wait (bounded) until the API's figures hold still and the lake
    sink and the stream job have taken every record the topics hold; returns the API's final
    figures, and leaves the records per topic in ``run.kafka_records``.

    "Every record" is measured by offsets, which restarts do not reset: each partition's end
    (found by fetching: ListOffsets is stale on the embedded broker) against the sink's
    position (its ``pinpipe_lake_position`` gauges) and the stream checkpoint's last committed
    batch. Counters would not do: a restarted API or sink counts from zero again.
    """
    from pinpipe.events import Table, all_topics, topic_name
    from pinpipe.services.inspect import list_partitions, partition_ends, partition_starts
    from pinpipe.speed.checkpoint import committed_offsets
    from pinpipe.speed.job import checkpoint_location

    urls = {c.name: c.metrics_url for c in run.components}
    api = _api_totals(urls.get("api"))
    if not api:
        run.event("api", "its /metrics cannot be read: stopping without waiting for the consumers")
        return {}
    settings = run.settings
    client = settings.broker.client_config(run.bootstrap)
    prefix = settings.broker.topic_prefix
    known = list_partitions(client)
    partitions = [(topic, p) for topic in all_topics(prefix) for p in known.get(topic, [])]
    streamed = {topic_name(prefix, table) for table in Table}
    behind: dict[str, int] = {}
    ends: dict[tuple[str, int], int | None] = {}
    deadline = time.monotonic() + CONSUMER_DRAIN_S
    while time.monotonic() < deadline:
        time.sleep(0.5)
        # Requests in flight when the source stopped still complete: read the API again each round.
        latest = _api_totals(urls.get("api"), attempts=1) or api
        settled, api = latest == api, latest
        ends = partition_ends(client, partitions, timeout_s=5.0)
        behind = {}
        if _alive(run, "lake-sink"):
            behind["lake sink"] = _records_behind(ends, _sink_positions(urls.get("lake-sink")))
        if run.options.stream and _alive(run, "stream"):
            done = committed_offsets(checkpoint_location(settings)) or {}
            behind["stream job"] = _records_behind({k: v for k, v in ends.items() if k[0] in streamed}, done)
        if settled and not any(behind.values()):
            break
    else:
        lagging = ", ".join(f"the {name} {n:,} records behind" for name, n in behind.items() if n)
        run.event("up", f"consumers did not catch up within {CONSUMER_DRAIN_S:.0f} s ({lagging or 'the API still answering'});"
                  " stopping anyway: they resume from their offsets next time")  # fmt: skip
    starts = partition_starts(client, partitions)
    run.kafka_records = {}
    for (topic, partition), end in ends.items():
        run.kafka_records[topic] = run.kafka_records.get(topic, 0) + max(0, (end or 0) - starts.get((topic, partition), 0))
    return api


def _alive(run: UpRun, name: str) -> bool:
    child = run.supervisor.children.get(name) if run.supervisor else None
    return child is not None and child.alive()


def _sink_positions(url: str | None) -> dict[tuple[str, int], int]:
    """The lake sink's next offset per partition, from its /metrics ({} if unreadable)."""
    from pinpipe.serve.dashboard.scrape import scrape

    if not url:
        return {}
    result = scrape(url, timeout_s=2.0)
    return {(labels["topic"], int(labels["partition"])): int(value)
            for name, labels, value in result.samples if name == "pinpipe_lake_position"}  # fmt: skip


def _records_behind(ends: dict[tuple[str, int], int | None], positions: dict[tuple[str, int], int]) -> int:
    """Records between a consumer's positions and the partitions' ends (a partition whose end
    is unknown counts as one record behind: it is not known to be done)."""
    return sum(1 if end is None else max(0, end - positions.get(key, 0)) for key, end in ends.items())


def emulator_stats(run: UpRun) -> dict:
    """What every emulator process of this run sent, summed ({} if the run had no emulator)."""
    if not run.options.emulate_rate:
        return {}
    totals: dict[str, int] = {}
    for path in sorted((run.settings.run_dir / EMULATOR_STATS_DIR).glob("*.json")):
        try:
            counts = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for name, value in counts.items():
            totals[name] = totals.get(name, 0) + int(value)
    return totals
