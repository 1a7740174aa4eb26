"""Fixtures of the batch-layer tests: one Spark session for the whole run.

``spark`` belongs in tests/conftest.py once the speed layer shares it; until then
tests/test_cleaning.py imports it from here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pinpipe.config import Settings


def spark_settings() -> Settings:
    """Settings of the test session: local[2], two shuffle partitions, a small heap."""
    return Settings(
        batch={"spark_master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"}
    )


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One local Spark session (UTC, quiet) shared by every test; stopped at the end."""
    from pinpipe.batch.spark import get_spark

    session = get_spark(spark_settings(), app_name="pinpipe-tests")
    yield session
    session.stop()
