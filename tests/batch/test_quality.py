"""The data-quality checks over measured numbers (no Spark needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from pinpipe.batch.job import date_range
from pinpipe.batch.quality import (
    Check,
    QualityError,
    QualityReport,
    TableCounts,
    TableProfile,
    answer_not_empty,
    null_rates,
    reconcile,
    unique_keys,
)
from pinpipe.batch.tasks import interval_flushed
from pinpipe.config import Settings


def test_reconcile_passes_only_when_raw_is_clean_plus_duplicates_plus_quarantine():
    assert reconcile(TableCounts("pin", raw=10, quarantined=1, duplicates=3, clean=6)).passed
    failed = reconcile(TableCounts("pin", raw=10, quarantined=1, duplicates=3, clean=5))
    assert not failed.passed
    assert failed.detail == "raw 10, clean 5 + duplicates 3 + quarantined 1 = 9"


def test_unique_keys_and_null_rates():
    profile = TableProfile(
        "geo", rows=4, nulls={"ind": 0, "country": 1, "timestamp": 0}, duplicate_keys=2
    )
    assert unique_keys(profile) == Check("geo.unique_keys", False, "2 keys appear more than once")
    checks = null_rates(profile, {"geo.ind": 0.0, "geo.country": 0.2})
    assert [(c.name, c.passed) for c in checks] == [
        ("geo.ind.null_rate", True),
        ("geo.country.null_rate", False),
    ]
    assert checks[1].detail == "1/4 = 0.2500 (max 0.2)"


def test_null_rates_skip_an_empty_run():
    assert null_rates(TableProfile("pin", 0, {"ind": 0}, 0), {"pin.ind": 0.0}) == []


def test_answer_must_not_be_empty_when_its_input_is_not():
    assert answer_not_empty("q", input_rows=0, answer_rows=0).passed
    assert answer_not_empty("q", input_rows=5, answer_rows=2).passed
    assert not answer_not_empty("q", input_rows=5, answer_rows=0).passed


def test_report_and_error_name_the_failures():
    report = QualityReport([Check("a", True, "ok"), Check("b", False, "bad")], {"dates": "all"})
    assert not report.passed and [c.name for c in report.failures] == ["b"]
    assert json.loads(report.to_json())["passed"] is False
    assert str(QualityError(report)) == "data-quality checks failed: b (bad)"


def test_interval_is_flushed_after_the_sink_rotation_age_and_a_grace():
    settings = Settings(lake={"rotate_age_s": 60})
    end = datetime(2024, 3, 2, tzinfo=UTC)
    assert not interval_flushed(settings, end, now=end + timedelta(seconds=119))
    assert interval_flushed(settings, end, now=end + timedelta(seconds=120))


def test_date_range_is_inclusive():
    first = datetime(2024, 2, 28).date()
    assert [d.isoformat() for d in date_range(first, first + timedelta(days=2))] == [
        "2024-02-28",
        "2024-02-29",
        "2024-03-01",
    ]
    with pytest.raises(ValueError):
        date_range(first, first - timedelta(days=1))
