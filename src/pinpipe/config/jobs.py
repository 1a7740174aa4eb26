"""Settings of the Spark jobs: the batch job (and the Spark session both jobs share) and the
stream job of the speed layer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator


class BatchSettings(BaseModel):
    """The Spark session of both jobs (batch and stream), the embedded Spark cluster, and the
    data-quality bounds of ``pinpipe batch``."""

    spark_master: str = Field(
        "local[2]",
        description="Where both jobs run: local[N], spark://host:7077, yarn, k8s://...; 'embedded': the "
        "standalone cluster `pinpipe services up --spark-workers N` runs on loopback. Under spark-submit "
        "(or a Databricks job) the launcher's master wins.",
    )
    spark_workers: int = Field(
        0, ge=0, le=16, description="Workers of the embedded Spark cluster `services up` / `up` / `demo` "
        "start (0: no cluster). The CLI's --spark-workers N also sets spark_master = 'embedded'.",
    )
    spark_worker_cores: int = Field(
        2, ge=1, description="Cores each embedded worker offers. Each job takes one core of every worker "
        "(spark.cores.max = workers), so the stream and a batch run both get executors at once.",
    )
    spark_worker_memory: str = Field("2g", description="Memory each embedded worker offers its executors.")
    spark_executor_memory: str = Field(
        "768m", description="spark.executor.memory on a cluster (two executors fit one worker)."
    )
    shuffle_partitions: int = Field(4, ge=1, description="spark.sql.shuffle.partitions.")
    driver_memory: str = Field("2g", description="spark.driver.memory (local mode's heap).")
    spark_conf: dict[str, str] = Field(
        default_factory=dict, description="Extra Spark properties, passed through as given."
    )
    max_null_rate: dict[str, float] = Field(
        default_factory=lambda: {
            "pin.ind": 0.0, "pin.unique_id": 0.0, "pin.category": 0.05,
            "pin.save_location": 0.05, "pin.follower_count": 0.15, "pin.poster_name": 0.15,
            "pin.title": 0.15, "pin.description": 0.35, "pin.tag_list": 0.15,
            "pin.image_src": 0.15, "geo.ind": 0.0, "geo.country": 0.05,
            "geo.coordinates": 0.05, "geo.timestamp": 0.05, "user.ind": 0.0,
            "user.user_name": 0.05, "user.age": 0.05, "user.date_joined": 0.05,
        },
        description="Upper bound of the null share of '<table>.<column>' in a run's clean rows; "
        "unlisted columns are not checked.",
    )


class SpeedSettings(BaseModel):
    """The speed layer: ``pinpipe stream`` (Kafka -> Spark Structured Streaming -> PostgreSQL)."""

    trigger_s: float = Field(1.0, gt=0, description="Micro-batch trigger interval in seconds.")
    checkpoint_dir: str | None = Field(
        None, description="Spark checkpoint (holds the Kafka offsets); unset means <data_dir>/checkpoints/speed."
    )
    source_format: str = Field(
        "pinpipe-kafka",
        description="pinpipe-kafka (built in) or kafka (Spark's connector, where its jars are installed).",
    )
    starting_offsets: str = Field(
        "earliest", description='earliest, latest or JSON {"topic": {"0": 42}} for a new checkpoint.'
    )
    max_offsets_per_trigger: int | None = Field(
        200_000, ge=1, description="Most records one micro-batch reads (None: all available)."
    )
    # Two, for local[2]: each task parses and cleans what it reads, so one task left a core
    # idle (measured: 0.46-0.53 s against 0.38-0.43 s for a micro-batch of 7,500 records).
    read_tasks: int = Field(
        2,
        ge=0,
        description="Spark tasks reading the three topics per micro-batch, each fetching several Kafka "
        "partitions at once (0: one task per Kafka partition). pinpipe-kafka source only.",
    )
    broker_wait_s: float = Field(
        900.0,
        ge=0,
        description="How long the stream job waits for a broker that does not answer (paused, down) "
        "before its query fails and the job exits; 0: for good. Restarting the job does not bring a "
        "broker back and costs Spark's start and warm-up each time (pinpipe.speed.source).",
    )
    postgres_wait_s: float = Field(
        900.0,
        ge=0,
        description="How long the stream job retries a micro-batch while PostgreSQL cannot be reached "
        "(restarted, down) before its query fails; 0: it fails at once. Each retry reconnects and "
        "writes the whole batch again, which the batch's record in pinpipe.stream_batch keeps exactly once.",
    )
    lateness_s: float = Field(
        600.0, ge=0, description="Watermark: metric windows older than the latest broker time minus this are final."
    )
    warmup_rows: int = Field(
        2000,
        ge=0,
        description="Generated posts the stream job parses and cleans (three times) before its query, so "
        "the JIT has compiled that path before the first records; 0 skips the warm-up. A query that "
        "resumes its checkpoint (a restart) skips it too: its waiting records come first.",
    )
    poster_window_s: int = Field(600, ge=1, description="Sliding window length of the poster activity metric.")
    poster_slide_s: int = Field(
        60, ge=1, description="... and how often a new window starts (the window is a whole number of slides)."
    )

    delta_output: bool = Field(
        True,
        description="Also append each micro-batch's clean rows to the lake's Delta tables "
        "<lake>/stream/pin|geo|user (exactly once, partitioned by dt); false: PostgreSQL only.",
    )
    delta_compact_every_batches: int = Field(
        100, ge=0, description="Compact each Delta table's small files every this many batches (0: never)."
    )
    delta_checkpoint_every_batches: int = Field(
        100, ge=0, description="Write a Delta log checkpoint of each table every this many batches (0: never)."
    )
    delta_vacuum_every_batches: int = Field(
        3600, ge=0, description="Vacuum each Delta table every this many batches (0: never)."
    )
    delta_vacuum_retention_hours: int = Field(
        24,
        ge=0,
        description="Vacuum deletes files no longer referenced once they are this old (readers in flight "
        "and time travel need them until then); the Delta log is kept as long.",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        # Unknown keys of a section are ignored: say so for the one renamed, not drop it.
        if isinstance(data, dict) and "read_tasks_per_topic" in data:
            raise ValueError(
                "speed.read_tasks_per_topic is now speed.read_tasks: the three topics are one "
                "source, read by that many Spark tasks in all"
            )
        return data

    @model_validator(mode="after")
    def _window_of_whole_slides(self) -> SpeedSettings:
        check_poster_window(self.poster_window_s, self.poster_slide_s)
        return self


def check_poster_window(window_s: int, slide_s: int) -> None:
    """Raise ``ValueError`` unless the poster window is a whole number of slides.

    Sliding windows are stored as slide-long panes (:mod:`pinpipe.speed.metrics`), so a window
    must be made of whole panes.
    """
    if window_s % slide_s:
        raise ValueError(
            f"the poster window (speed.poster_window_s = {window_s}) must be a whole number of "
            f"slides (speed.poster_slide_s = {slide_s}): windows are kept as slide-long panes"
        )

