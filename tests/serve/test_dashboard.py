"""The dashboard: batch-run recording and its /metrics, the JSON endpoints, and the page in a
real headless Chromium (Debian's chromium + chromedriver, driven by Selenium) with a live
ingest API posting records; a screenshot is kept under test-artifacts/."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pinpipe.batch.recording import recorded_run
from pinpipe.config import Settings, load_settings
from pinpipe.events import ANSWER_NAMES
from pinpipe.serve.dashboard import create_dashboard
from pinpipe.serve.dashboard.metrics import BatchRunMetrics
from pinpipe.serve.dashboard.scrape import RateTracker, histogram_quantile
from pinpipe.store.reads import ReadOnlyStore
from pinpipe.store.schema import apply_migrations
from tests.ingest.conftest import make_settings, running_api, running_server
from tests.ingest.rows import PIN

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def settings_for(dsn: str, data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, postgres={"dsn": dsn})


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# --- fast: no processes -------------------------------------------------------------------------


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = {0.5: 10.0, 1.0: 30.0, 2.0: 40.0, float("inf"): 40.0}
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.5)  # rank 10: end of bucket 1
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.75)  # rank 20: half of (0.5, 1]
    assert histogram_quantile(0.99, buckets) == pytest.approx(1.96)
    assert histogram_quantile(0.5, {}) is None


def test_rates_come_from_totals_over_the_span_and_never_go_negative():
    tracker = RateTracker(span_s=10.0)
    assert tracker.observe({"accepted": 100.0}, now=0.0) == {"accepted": 0.0}
    assert tracker.observe({"accepted": 150.0}, now=5.0) == {"accepted": 10.0}
    assert tracker.observe({"accepted": 300.0}, now=10.0) == {"accepted": 20.0}
    assert tracker.observe({"accepted": 5.0}, now=12.0)["accepted"] == 0.0  # counter reset


def test_batch_metrics_export_both_statuses_from_the_start():
    text = BatchRunMetrics().render().decode()
    values = samples(text)
    assert values[("pinpipe_batch_runs_total", (("status", "success"),))] == 0
    assert values[("pinpipe_batch_runs_total", (("status", "failed"),))] == 0
    assert values[("pinpipe_batch_last_success_timestamp_seconds", ())] == 0


def test_answer_tables_are_the_batch_answers():
    pytest.importorskip("pyspark")
    from pinpipe.batch.answers import ANSWERS

    assert list(ANSWER_NAMES) == list(ANSWERS)


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_batch_runs_are_recorded_and_exported(fresh_dsn, traversable_dir):
    settings = settings_for(fresh_dsn, traversable_dir)
    before = time.time()
    with recorded_run(settings, None) as run_id:
        assert run_id is not None
    with pytest.raises(ValueError, match="bad input"), recorded_run(settings, None):
        raise ValueError("bad input")
    # run_batch records its run too: a failure before Spark did any work (no spark session).
    from pinpipe.batch import run_batch

    with pytest.raises(AttributeError):
        run_batch(settings, all_dates=True, spark=object())  # type: ignore[arg-type]
    with psycopg.connect(fresh_dsn) as conn:
        rows = conn.execute("SELECT status, error, finished_at IS NOT NULL FROM pinpipe.batch_run ORDER BY run_id").fetchall()
    assert [(status, done) for status, _, done in rows] == [("success", True), ("failed", True), ("failed", True)]
    assert rows[1][1] == "ValueError: bad input"
    assert rows[2][1].startswith("AttributeError")

    store = ReadOnlyStore(fresh_dsn)
    try:
        values = samples(BatchRunMetrics(store.run_summary).render().decode())
        assert values[("pinpipe_batch_runs_total", (("status", "success"),))] == 1
        assert values[("pinpipe_batch_runs_total", (("status", "failed"),))] == 2
        last = values[("pinpipe_batch_last_success_timestamp_seconds", ())]
        assert before - 1 <= last <= time.time() + 1
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            store.query("DELETE FROM pinpipe.batch_run")
    finally:
        store.close()


# --- seeded PostgreSQL + a live ingest API + Chromium -------------------------------------------

ANSWER_ROWS = {
    "top_category_by_country": [("Chad", "art", 2), ("Peru", "travel", 1)],
    "top_category_by_year": [(2018, "beauty", 12), (2019, "travel", 9), (2020, "quotes", 7)],
    "median_followers_by_age_group": [("18-24", 1500.0), ("25-35", 820.5), ("+50", 77.0)],
    "users_joined_by_year": [(2015, 40), (2016, 31), (2017, 12)],
}


def seed(dsn: str) -> None:
    apply_migrations(dsn)
    with psycopg.connect(dsn) as conn:
        for name, rows in ANSWER_ROWS.items():
            width = len(rows[0])
            conn.cursor().executemany(
                f"INSERT INTO pinpipe.{name} VALUES ({', '.join(['%s'] * width)})", rows
            )
        conn.execute(
            "INSERT INTO pinpipe.pin (ind, unique_id, category, poster_name, broker_timestamp, kafka_partition, kafka_offset)"
            " SELECT n, 'id-' || n, (ARRAY['art','travel','beauty'])[1 + n % 3], 'poster ' || (n % 4),"
            "        clock_timestamp() - interval '300 milliseconds', 0, n FROM generate_series(1, 30) n"
        )
        conn.execute(
            "INSERT INTO pinpipe.geo (ind, country, kafka_partition, kafka_offset)"
            " SELECT n, 'Chad', 0, n FROM generate_series(1, 20) n"
        )
        conn.execute(
            'INSERT INTO pinpipe."user" (ind, user_name, age, kafka_partition, kafka_offset)'
            " SELECT n, 'User ' || n, 30, 0, n FROM generate_series(1, 10) n"
        )
        conn.execute(
            "INSERT INTO pinpipe.category_per_minute (window_start, window_end, category, events)"
            " VALUES (date_trunc('minute', now()), date_trunc('minute', now()) + interval '1 minute', 'art', 17),"
            "        (date_trunc('minute', now()), date_trunc('minute', now()) + interval '1 minute', 'travel', 5)"
        )
        conn.execute(
            "INSERT INTO pinpipe.poster_pane (pane_start, pane_end, poster_name, posts, max_follower_count)"
            " VALUES (date_trunc('minute', now()), date_trunc('minute', now()) + interval '1 minute',"
            "         'Poppy Poster', 6, 26000)"
        )
        conn.execute("INSERT INTO pinpipe.stream_batch (query_id, batch_id, records) VALUES ('q', 0, 60)")


def write_quality_report(data_dir: Path) -> None:
    path = data_dir / "lake" / "answers" / "_quality_report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "passed": False,
        "checks": [
            {"name": "pin.counts_reconcile", "passed": True, "detail": "raw 30, clean 30 + duplicates 0 + quarantined 0 = 30"},
            {"name": "pin.title.null_rate", "passed": False, "detail": "9/30 = 0.3000 (max 0.15)"},
        ],
        "figures": {"tables": [{"table": "pin", "raw": 30, "quarantined": 0, "duplicates": 0, "clean": 30}]},
    }
    path.write_text(json.dumps(report))


@pytest.fixture
def posting_api(kafka_bootstrap) -> Iterator[str]:
    """A real ingest API with a thread posting pins (~40 records/s); yields its /metrics URL."""
    stop = threading.Event()
    with running_api(make_settings(kafka_bootstrap)) as api:
        def post() -> None:
            while not stop.wait(0.025):
                api.client.post("/pin/", json=PIN)

        thread = threading.Thread(target=post, daemon=True)
        thread.start()
        try:
            yield f"{api.url}/metrics"
        finally:
            stop.set()
            thread.join(timeout=10)


def chromium_driver():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("needs Debian's chromium and chromium-driver: sh scripts/install-system-packages.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,2200"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def number(text: str) -> float:
    cleaned = text.replace(",", "").split()[0] if text.strip() else "-"
    try:
        return float(cleaned)
    except ValueError:
        return 0.0


@pytest.mark.integration
def test_page_shows_live_figures_and_answers_in_chromium(fresh_dsn, traversable_dir, posting_api):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    seed(fresh_dsn)
    write_quality_report(traversable_dir)
    settings = settings_for(fresh_dsn, traversable_dir)
    urls = {"ingest": posting_api, "lake-sink": "http://127.0.0.1:9/metrics"}  # the sink is down
    app = create_dashboard(settings, fresh_dsn, urls)
    with running_server(app) as base:
        health = httpx.get(f"{base}/healthz")
        assert health.status_code == 200
        live = httpx.get(f"{base}/api/live").json()
        assert live["rows"] == {"pin": 30, "geo": 20, "user": 10, "dead_letter": 0}
        assert live["realtime"]["categories"][0] == {"category": "art", "events": 17}
        assert live["realtime"]["posters"][0]["poster_name"] == "Poppy Poster"
        assert [c["up"] for c in live["components"]] == [True, False]
        assert 0.1 < live["stream"]["latency_p50_s"] < 5
        batch = httpx.get(f"{base}/api/batch").json()
        assert batch["answers"]["top_category_by_year"]["rows"][0] == [2018, "beauty", 12]
        assert batch["quality"]["passed"] is False

        driver = chromium_driver()
        try:
            driver.get(base)
            wait = WebDriverWait(driver, 30, poll_frequency=0.2)
            # Live figures: updated by polling (no reload) until the ingest rate is non-zero.
            wait.until(lambda d: number(d.find_element(By.ID, "ingest-rate").text) > 0)
            wait.until(lambda d: number(d.find_element(By.ID, "ingest-accepted").text) > 0)
            assert number(driver.find_element(By.ID, "rows-pin").text) == 30
            assert number(driver.find_element(By.ID, "rows-total").text) == 60
            assert "ms" in driver.find_element(By.ID, "stream-latency").text
            components = driver.find_element(By.ID, "components").text
            assert "ingest" in components and "up" in components and "down" in components
            assert "art" in driver.find_element(By.ID, "categories-chart").get_attribute("textContent")
            assert "Poppy Poster" in driver.find_element(By.ID, "posters").text
            # The answers as tables (and charts), the quality report.
            answer = driver.find_element(By.ID, "answer-top_category_by_year")
            assert "beauty" in answer.text and "2018" in answer.text
            assert answer.find_elements(By.TAG_NAME, "svg")
            assert "Chad" in driver.find_element(By.ID, "answer-top_category_by_country").text
            assert "no rows yet" in driver.find_element(By.ID, "answer-top_user_by_country").text
            assert driver.find_element(By.ID, "quality-badge").text == "checks failed"
            assert "pin.title.null_rate" in driver.find_element(By.ID, "quality").text
            before = number(driver.find_element(By.ID, "ingest-accepted").text)
            wait.until(lambda d: number(d.find_element(By.ID, "ingest-accepted").text) > before)
            ARTIFACTS.mkdir(exist_ok=True)
            driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        finally:
            driver.quit()


def test_the_dashboard_is_told_its_metric_urls_by_its_caller():
    """Settings' URLs win over the ports a running up recorded, which win over the defaults."""
    from pinpipe.serve.dashboard.server import default_metrics_urls

    settings = load_settings(ingest={"host": "0.0.0.0", "port": 8101},
                             up={"lake_metrics_port": 9101, "stream_metrics_port": 9102,
                                 "dashboard": {"metrics_urls": {"stream": "http://10.0.0.9:1/metrics"}}})
    assert default_metrics_urls(settings, {}) == {
        "ingest": "http://127.0.0.1:8101/metrics",
        "lake-sink": "http://127.0.0.1:9101/metrics",
        "stream": "http://10.0.0.9:1/metrics",
    }
    assert default_metrics_urls(settings, {"ingest": 8200, "lake-sink": 9200})["lake-sink"] == (
        "http://127.0.0.1:9200/metrics")
    assert default_metrics_urls(settings, {"ingest": 8200})["ingest"] == "http://127.0.0.1:8200/metrics"
