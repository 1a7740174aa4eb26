"""The Spark session the batch and speed jobs share, built from settings (``settings.batch``
holds the Spark settings of both: master, memory, shuffle partitions)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pinpipe.config import Settings
from pinpipe.processes import process_table, terminate_pid

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


COMPILE_HUGE_METHODS = "-XX:-DontCompileHugeMethods"


def get_spark(settings: Settings, app_name: str = "pinpipe") -> SparkSession:
    """Get or create the Spark session: master from ``settings.batch``, UTC, quiet logs.

    ``batch.spark_master = "embedded"`` is the embedded standalone cluster's ``spark://`` URL
    (:func:`pinpipe.services.spark_cluster.resolve_master`). On any master but ``local``, pinpipe
    ships itself to the executors (:mod:`pinpipe.spark.shipping`: why, and what the executors'
    Python needs); on the embedded cluster each job also takes one core of every worker and keeps
    a Spark event log (:mod:`pinpipe.spark.event_log`: which executor ran how many tasks).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the Spark jobs need pyspark: pip install 'pinpipe[spark]'") from exc

    from pinpipe.services.spark_cluster import embedded_master_url, resolve_master
    from pinpipe.spark.event_log import event_log_conf

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    batch = settings.batch
    master = resolve_master(settings)
    cluster: dict[str, str] = {}
    if not master.startswith("local"):
        cluster["spark.executor.memory"] = batch.spark_executor_memory
    if master == embedded_master_url(settings):
        cluster.update(_embedded_cluster_conf(settings))
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
        **cluster,
        **event_log_conf(settings, master),
        **batch.spark_conf,
    }
    # Under spark-submit (or a Databricks job) the launcher owns the master: the JVM is up
    # before Python starts and hands over its gateway port.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    if _on_this_machine(master) and not submitted:
        # One machine (local mode, or a cluster on loopback): the driver listens on loopback
        # only (and Spark stops warning that the hostname resolves to a loopback address).
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        conf = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1", **conf}
    builder = SparkSession.builder.appName(app_name)
    if not submitted:
        builder = builder.master(master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if not spark.sparkContext.master.startswith("local"):
        from pinpipe.spark.shipping import ship_pinpipe

        ship_pinpipe(spark, settings)
    return spark


def _on_this_machine(master: str) -> bool:
    """A ``local`` master, or a cluster master on loopback (the embedded one)."""
    return master.startswith("local") or master.startswith(("spark://127.0.0.1:", "spark://localhost:"))


def _embedded_cluster_conf(settings: Settings) -> dict[str, str]:
    """One core of every worker for this job (``spark.cores.max``, spread over the workers):
    the stream job and a batch run then run side by side, each with an executor per worker;
    without it the first application takes every core and the next one waits for it to end."""
    from pinpipe.services.spark_cluster import alive_workers, master_state, running_master

    record = running_master(settings)
    state = master_state(record.web_ui) if record is not None else None
    workers = max(1, len(alive_workers(state)))
    return {"spark.cores.max": str(workers), "spark.executor.cores": "1"}


@contextmanager
def spark_session(settings: Settings, app_name: str = "pinpipe") -> Iterator[SparkSession]:
    """A session for the with-block whose JVM is gone when the block ends, on every path out.

    ``spark.stop()`` alone leaves the gateway JVM to exit when Python does, and a Ctrl-C while
    the JVM starts leaves one that nothing refers to (PySpark had not stored it yet): seen as
    an orphaned JVM after an interrupted demo. So the JVMs this process started during the
    block are ended here (SIGTERM, then SIGKILL); Spark's own Python workers exit with them.
    """
    from pyspark import SparkContext

    before = set(_java_children())
    spark = None
    try:
        spark = get_spark(settings, app_name=app_name)
        yield spark
    finally:
        try:
            if spark is not None:
                spark.stop()
        finally:
            started = [pid for pid in _java_children() if pid not in before]
            if started:
                # The gateway is gone: the next session launches a new one.
                SparkContext._gateway = None
                SparkContext._jvm = None
            for pid in started:
                terminate_pid(pid, timeout=10.0)


def _java_children() -> list[int]:
    """Pids of the live JVMs that are direct children of this process."""
    found = []
    for entry in process_table():
        if entry.ppid != os.getpid() or entry.state == "Z":
            continue
        try:
            if Path(os.readlink(f"/proc/{entry.pid}/exe")).name == "java":
                found.append(entry.pid)
        except OSError:  # exited meanwhile
            continue
    return found
