"""Is the stream job doing its job? Read from its ``/metrics`` (:mod:`pinpipe.speed.prom`).

A live process is not enough: after a restart the job spends ~20 s starting Spark and warming
up before any query runs, and a query can hang. The job is **healthy** when its query runs
(``pinpipe_stream_query_active`` 1) and has made progress within ``max_age_s``: committed a
micro-batch, or run a trigger that found nothing new to read
(``pinpipe_stream_last_progress_timestamp_seconds``). :func:`stream_health` says which and why;
:func:`stream_losses` gives the records the speed layer lost to restarted broker logs, and
:func:`checkpoint_losses` the same from the checkpoint when no job runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

QUERY_ACTIVE = "pinpipe_stream_query_active"
LAST_PROGRESS = "pinpipe_stream_last_progress_timestamp_seconds"
UNREACHABLE_SINCE = "pinpipe_stream_broker_unreachable_since_timestamp_seconds"
LOG_RESTARTS = "pinpipe_stream_log_restarts_total"
RECORDS_LOST = "pinpipe_stream_records_lost_total"
END_UNKNOWN = "pinpipe_stream_lost_ranges_end_unknown_total"

DEFAULT_MAX_AGE_S = 60.0
"""A trigger runs every second by default and a large micro-batch takes seconds: a minute
without either is a query that does not advance."""


@dataclass(frozen=True)
class StreamHealth:
    healthy: bool
    reason: str

    def __bool__(self) -> bool:
        return self.healthy


@dataclass(frozen=True)
class StreamLosses:
    """Broker logs found restarted, and the acknowledged records of them never processed."""

    log_restarts: int = 0
    records_lost: dict[str, int] = field(default_factory=dict)
    """By topic, as far as the old logs' ends were seen."""
    partitions_end_unknown: dict[str, int] = field(default_factory=dict)
    """By topic: partitions whose old log's end was never seen (their loss is not counted)."""


def _samples(metrics: str, timeout_s: float) -> dict[str, list[tuple[dict, float]]]:
    """``metrics`` (a URL or the exposition text itself) -> sample name -> [(labels, value)]."""
    from prometheus_client.parser import text_string_to_metric_families

    text = metrics
    if metrics.startswith(("http://", "https://")):
        import httpx

        response = httpx.get(metrics, timeout=timeout_s)
        response.raise_for_status()
        text = response.text
    found: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return found


def _value(samples: dict, name: str) -> float | None:
    values = samples.get(name)
    return None if not values else values[0][1]


def stream_health(
    metrics: str, *, max_age_s: float = DEFAULT_MAX_AGE_S, now: float | None = None, timeout_s: float = 3.0
) -> StreamHealth:
    """Healthy or not, with the reason, from the stream job's metrics URL or text."""
    try:
        samples = _samples(metrics, timeout_s)
    except Exception as exc:  # noqa: BLE001 - any failure to read them is the answer
        return StreamHealth(False, f"metrics not readable: {exc}")
    active = _value(samples, QUERY_ACTIVE)
    if active is None:
        return StreamHealth(False, f"no {QUERY_ACTIVE} in the metrics (not the stream job's?)")
    if active < 1:
        return StreamHealth(False, "the process runs but no query does (starting, warming up, or its query failed)")
    now = time.time() if now is None else now
    last = _value(samples, LAST_PROGRESS) or 0.0
    unreachable = _value(samples, UNREACHABLE_SINCE) or 0.0
    broker = f"; the broker has not answered for {now - unreachable:.0f} s" if unreachable > 0 else ""
    if last <= 0:
        age = None
    else:
        age = max(now - last, 0.0)
    if age is None or age > max_age_s:
        since = "yet" if age is None else f"for {age:.0f} s"
        return StreamHealth(
            False, f"the query has neither committed a micro-batch nor found nothing to read {since}{broker}"
        )
    return StreamHealth(True, f"query running, last progress {age:.1f} s ago{broker}")


def stream_losses(metrics: str, *, timeout_s: float = 3.0) -> StreamLosses:
    """The loss figures of the stream job's metrics (URL or text); raises if they cannot be read."""
    samples = _samples(metrics, timeout_s)

    def by_topic(name: str) -> dict[str, int]:
        return {labels.get("topic", ""): int(value) for labels, value in samples.get(name, ())}

    return StreamLosses(int(_value(samples, LOG_RESTARTS) or 0), by_topic(RECORDS_LOST), by_topic(END_UNKNOWN))


def checkpoint_losses(checkpoint: str) -> StreamLosses:
    """The same figures read from the checkpoint's source journal, with or without a running job
    (:func:`pinpipe.speed.job.checkpoint_location`; a remote checkpoint has none)."""
    from pinpipe.speed.job import journal_dir
    from pinpipe.speed.journal import SourceJournal

    directory = journal_dir(checkpoint)
    if directory is None:
        return StreamLosses()
    restarts, lost, unknown = 0, {}, {}
    for event in SourceJournal(directory).events()[0]:
        restarts += event.get("kind") == "log_restart"
        for item in event.get("lost", ()):
            topic = str(item.get("topic"))
            if item.get("end") is None:
                unknown[topic] = unknown.get(topic, 0) + 1
            else:
                lost[topic] = lost.get(topic, 0) + max(int(item["end"]) - int(item["first"]), 0)
    return StreamLosses(restarts, lost, unknown)
