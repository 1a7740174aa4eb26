"""The stream job's Prometheus metrics: scraped from its own /metrics while it runs."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pinpipe.events import Table
from pinpipe.speed.job import run_stream
from pinpipe.speed.prom import LATENCY_BUCKETS, StreamMetrics
from tests.speed.conftest import create_topics, speed_settings
from tests.speed.pg import clean_rows, query, wait_for
from tests.speed.records import geo, pin, user


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """``/metrics`` as (sample name, sorted labels) -> value; empty if not served yet."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def test_latency_buckets_include_the_4_s_target():
    assert 4 in LATENCY_BUCKETS


def test_lag_is_latest_minus_committed_end_offset():
    metrics = StreamMetrics()
    metrics.progress({"sources": [{
        "endOffset": '{"t.pin": {"0": 5, "1": 7}}',
        "latestOffset": '{"t.pin": {"0": 9, "1": 7}}',
    }]})  # fmt: skip
    lag = {s.labels["partition"]: s.value for s in metrics.lag.collect()[0].samples}
    assert lag == {"0": 4, "1": 0}


@pytest.mark.integration
def test_stream_exports_records_latency_and_lag(
    spark, kafka_bootstrap, fresh_dsn, topic_prefix, produce, traversable_dir
):
    create_topics(kafka_bootstrap, topic_prefix)
    settings = speed_settings(topic_prefix)
    produce(topic_prefix, Table.PIN, [pin(1, "u-1"), pin(2, "u-2"), pin(3, "u-3"), b"{not json"])
    produce(topic_prefix, Table.GEO, [geo(1), geo(2)])
    produce(topic_prefix, Table.USER, [user(1)])
    produced = 7

    port = free_port()
    stop, started, failure = threading.Event(), threading.Event(), []

    def run() -> None:
        try:
            run_stream(
                settings,
                kafka_bootstrap,
                fresh_dsn,
                trigger_s=0.5,
                stop_event=stop,
                checkpoint_dir=str(traversable_dir / "ckpt"),
                started=started,
                metrics_port=port,
            )
        except BaseException as error:  # noqa: BLE001 - reported by the test
            failure.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: started.is_set() or bool(failure), what="the stream to start")
        assert not failure, failure
        wait_for(
            lambda: (
                bool(failure) or total(scrape(port), "pinpipe_stream_records_total") >= produced
            ),
            what="the records to be counted",
        )
        assert not failure, failure
        wait_for(
            lambda: (
                bool(failure) or any(n == "pinpipe_stream_consumer_lag" for n, _ in scrape(port))
            ),
            what="the consumer lag gauge",
        )
        assert not failure, failure
        samples = scrape(port)
    finally:
        stop.set()
        thread.join(120)
    assert not failure, failure

    committed = query(fresh_dsn, "SELECT sum(records) AS n FROM pinpipe.stream_batch")[0]["n"]
    assert committed == produced
    assert len(clean_rows(fresh_dsn, "pin")) == 3
    records = {
        dict(labels)["table"]: v
        for (n, labels), v in samples.items()
        if n == "pinpipe_stream_records_total"
    }
    assert records == {"pin": 3, "geo": 2, "user": 1, "dead_letter": 1}
    assert total(samples, "pinpipe_stream_latency_seconds_count") == committed
    inf = samples[("pinpipe_stream_latency_seconds_bucket", (("le", "+Inf"),))]
    assert inf == committed
    assert ("pinpipe_stream_latency_seconds_bucket", (("le", "4.0"),)) in samples
    lag = {
        dict(labels)["topic"]: v
        for (n, labels), v in samples.items()
        if n == "pinpipe_stream_consumer_lag"
    }
    assert set(lag) <= {f"{topic_prefix}.{t.value}" for t in Table} and lag
    assert all(v >= 0 for v in lag.values())
