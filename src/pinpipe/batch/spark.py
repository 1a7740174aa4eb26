"""The Spark session of the batch (and speed) layer, built from settings."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from pinpipe.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


COMPILE_HUGE_METHODS = "-XX:-DontCompileHugeMethods"


def get_spark(settings: Settings, app_name: str = "pinpipe") -> SparkSession:
    """Get or create the Spark session: master from ``settings.batch``, UTC, quiet logs.

    Workers run this interpreter (``PYSPARK_PYTHON``), so they see the same packages. With a
    cluster master (``spark://...``, ``yarn``) ship pinpipe as a wheel (``--py-files``).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the batch layer needs pyspark: pip install 'pinpipe[spark]'") from exc

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    batch = settings.batch
    conf = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(batch.shuffle_partitions),
        "spark.driver.memory": batch.driver_memory,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.parquet.compression.codec": "zstd",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        # HotSpot leaves methods over 8,000 bytes of bytecode to the interpreter. The stream
        # job's one pass over three tables' rules generates such a method: interpreted, it
        # cost 34-41 us a record against 17 us compiled (pinpipe.speed.job.tag_outputs).
        "spark.driver.extraJavaOptions": f"-Dlog4j2.level=ERROR {COMPILE_HUGE_METHODS}",
        "spark.executor.extraJavaOptions": COMPILE_HUGE_METHODS,
        # Source options carry the broker's credentials (kafka.sasl.password, kafka.sasl.jaas.config):
        # Spark masks matching option values in plans and logs.
        "spark.sql.redaction.options.regex": "(?i)url|password|secret|jaas|token",
        **batch.spark_conf,
    }
    # Under spark-submit (or a Databricks job) the launcher owns the master: the JVM is up
    # before Python starts and hands over its gateway port.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    if batch.spark_master.startswith("local") and not submitted:
        # One machine: the driver listens on loopback only (and Spark stops warning that the
        # hostname resolves to a loopback address).
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        conf = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1", **conf}
    builder = SparkSession.builder.appName(app_name)
    if not submitted:
        builder = builder.master(batch.spark_master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
