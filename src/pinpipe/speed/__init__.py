"""The speed layer: a Kafka source for Spark, the stream job, its PostgreSQL writer, metrics.

``pinpipe stream`` calls :func:`run_stream` inside the services' context managers::

    with kafka_bootstrap(settings) as bootstrap, postgres_dsn(settings) as dsn:
        run_stream(settings, bootstrap, dsn)

Importing this package starts no JVM; pyspark is imported when a job runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pinpipe.speed.job import run_stream, start_stream

__all__ = ["run_stream", "start_stream"]


def __getattr__(name: str) -> Any:
    # Lazy: Spark's Python workers import pinpipe.speed.source for every read task and
    # planning call, and must not pay for the job's imports (settings, pydantic: ~0.27 s each).
    if name in __all__:
        from pinpipe.speed import job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
