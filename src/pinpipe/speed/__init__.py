"""The speed layer: a Kafka source for Spark, the stream job, its PostgreSQL writer, metrics.

``pinpipe stream`` calls :func:`run_stream` inside the services' context managers::

    with kafka_bootstrap(settings) as bootstrap, postgres_dsn(settings) as dsn:
        run_stream(settings, bootstrap, dsn, trigger_s=settings.speed.trigger_s)

Importing this package starts no JVM; pyspark is imported when a job runs.
"""

from pinpipe.speed.job import run_stream, start_stream

__all__ = ["run_stream", "start_stream"]
