"""One settings object for every pinpipe component.

Values come from, lowest precedence first: the defaults below, an optional TOML config file
(``--config FILE``, ``PINPIPE_CONFIG`` or ``./pinpipe.toml``), environment variables
``PINPIPE_*`` (nested with a double underscore: ``PINPIPE_BROKER__BOOTSTRAP_SERVERS``), and
explicit overrides (the CLI's flags). Every server binds to loopback unless told otherwise;
secrets are ``SecretStr`` so they print masked.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_CONFIG_FILE = Path("pinpipe.toml")

# The config file chosen for the Settings being built (set by load_settings).
_config_file: ContextVar[Path | None] = ContextVar("pinpipe_config_file", default=None)


class BrokerSettings(BaseModel):
    """The Kafka-protocol broker. Without bootstrap servers pinpipe runs its embedded one."""

    bootstrap_servers: str | None = Field(
        None, description="host:port[,host:port]; unset means the embedded Tansu broker."
    )
    topic_prefix: str = Field("pinpipe", description="Topics are <prefix>.pin|.geo|.user|.dlq.")
    partitions: int = Field(3, ge=1, description="Partitions of each topic pinpipe creates.")
    replication_factor: int = Field(1, ge=1)
    embedded_port: int = Field(0, ge=0, le=65535, description="0 picks a free loopback port.")
    storage: Literal["memory", "s3"] = Field(
        "memory",
        description="The embedded broker's log: memory (lost when the broker stops) or s3 (kept in "
        "<data_dir>/broker-s3 by a local S3 server pinpipe starts first; survives a broker's death, "
        "but every fetch lists the partition's batches, so it slows down as the log grows and "
        "stalls past a few thousand batches per partition: README, Known limits). "
        "Ignored with bootstrap_servers.",
    )
    embedded_s3_port: int = Field(
        0, ge=0, le=65535, description="Port of that S3 server (storage = s3); 0 picks a free loopback port."
    )
    security_protocol: str | None = Field(None, description="PLAINTEXT, SSL, SASL_SSL, ...")
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    client_options: dict[str, str] = Field(
        default_factory=dict, description="Extra librdkafka properties, passed through as given."
    )
    java_client_options: dict[str, str] = Field(
        default_factory=dict,
        description="Extra Kafka Java client properties, for Spark's own kafka connector only "
        "(speed.source_format = kafka); e.g. sasl.jaas.config for a mechanism pinpipe cannot translate.",
    )

    def client_config(self, bootstrap_servers: str) -> dict[str, str]:
        """librdkafka properties shared by every producer, consumer and admin client."""
        config: dict[str, str] = {"bootstrap.servers": bootstrap_servers}
        optional = {
            "security.protocol": self.security_protocol,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
        }
        config.update({key: value for key, value in optional.items() if value is not None})
        config.update(self.client_options)
        return config

    def java_client_config(self, bootstrap_servers: str) -> dict[str, str]:
        """The same connection as :meth:`client_config`, in the Kafka Java client's properties.

        Spark's kafka connector runs the Java client, whose names differ from librdkafka's
        where credentials are concerned: a username and password become ``sasl.jaas.config``
        (PLAIN and SCRAM; set it in ``java_client_options`` for other mechanisms) and a CA file
        becomes a PEM trust store. ``client_options`` (librdkafka's) are not passed on.
        """
        config: dict[str, str] = {"bootstrap.servers": bootstrap_servers}
        if self.security_protocol is not None:
            config["security.protocol"] = self.security_protocol
        if self.sasl_mechanism is not None:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None and "sasl.jaas.config" not in self.java_client_options:
            config["sasl.jaas.config"] = _jaas_config(
                self.sasl_mechanism or "PLAIN",
                self.sasl_username,
                self.sasl_password.get_secret_value() if self.sasl_password else "",
            )
        if self.ssl_ca_location is not None:
            config["ssl.truststore.type"] = "PEM"
            config["ssl.truststore.location"] = self.ssl_ca_location
        config.update(self.java_client_options)
        return config


_JAAS_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def _jaas_config(mechanism: str, username: str, password: str) -> str:
    """``sasl.jaas.config`` for a username and password (quotes and backslashes escaped)."""
    module = _JAAS_LOGIN_MODULES.get(mechanism.upper())
    if module is None:
        raise ValueError(
            f"broker.sasl_mechanism {mechanism!r} has no username/password login for Spark's kafka "
            "connector: set broker.java_client_options['sasl.jaas.config']"
        )

    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return f"{module} required username={quoted(username)} password={quoted(password)};"


class PostgresSettings(BaseModel):
    """The serving store. Without a DSN pinpipe runs an embedded PostgreSQL server."""

    dsn: SecretStr | None = Field(None, description="postgresql://...; unset means embedded.")
    reader_dsn: SecretStr | None = Field(
        None,
        description="The login of readers (the dashboard): a role granted pinpipe_readonly, which can only"
        " SELECT. Unset: the embedded server makes one (pinpipe_reader); with an external dsn readers then"
        " use dsn in read-only sessions, which a SET can undo.",
    )
    embedded_port: int = Field(0, ge=0, le=65535, description="0 picks a free loopback port.")
    database: str = Field("pinpipe", description="Database the embedded server creates.")
    run_as_user: str = Field(
        "nobody", description="Unprivileged OS user that runs the embedded server when pinpipe runs as root."
    )
    server_home: Path = Field(
        Path("/var/lib/pinpipe"),
        description="Where the embedded server's data directory and binaries go when pinpipe runs as root"
        " and run_as_user cannot enter the directories holding data_dir or the venv (a clone in root's"
        " home); one subdirectory per data_dir, removed by `pinpipe services clean`.",
    )


class SourceSettings(BaseModel):
    """The emulated source: generated tables or a SQL database holding them."""

    seed: int = Field(42, description="Seed of the deterministic table generator.")
    rows: int = Field(11_154, ge=1, description="Rows in each generated source table.")
    dsn: SecretStr | None = Field(
        None, description="Read source rows from this database instead of generating them."
    )


class EmulatorSettings(BaseModel):
    """The user emulator posting events over HTTP."""

    base_url: str = Field("http://127.0.0.1:8000", description="Where the emulator posts.")
    wire_format: str = Field("rest-proxy", description="rest-proxy, kinesis, legacy or native.")
    user_id: str = Field("0a1b2c3d4e5f", description="<user_id> in topic and stream names.")
    datetime_style: str = Field("iso", description="iso, space or zoned datetimes on the wire.")
    rate: float = Field(50.0, gt=0, description="Posts per second.")
    # The API answers once the broker acknowledged, after up to ingest.linger_ms of batching,
    # and a rest-proxy post is three requests: 16 in flight keep 200 posts/s on schedule here
    # (8 fell behind at 20 ms linger; 32 and 64 were slower still, httpx's pool costs CPU).
    concurrency: int = Field(16, ge=1, description="Requests in flight.")
    max_retries: int = Field(5, ge=0)


class IngestSettings(BaseModel):
    """The HTTP ingestion API (``pinpipe api``): where it listens and what it accepts."""

    host: str = Field("127.0.0.1", description="Bind address; non-loopback needs API keys or insecure.")
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, description="uvicorn worker processes.")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1, description="Largest request body (413).")
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="Largest request header block, names and values (431)."
    )
    max_records_per_request: int = Field(1000, ge=1, description="Most records in one request (422).")
    max_record_bytes: int = Field(
        100_000, ge=1, description="Largest single record, as stored in Kafka (413)."
    )
    api_key_hashes: list[str] = Field(
        default_factory=list,
        description="sha256 hex digests of the accepted API keys; empty means no authentication.",
    )
    produce_timeout_s: float = Field(
        5.0, gt=0, description="How long a record may wait for the broker's ack before a 503."
    )
    retry_after_s: int = Field(2, ge=1, description="Retry-After of 429/503 answers.")
    # 20 ms, not librdkafka's 5: a request then waits up to 20 ms more for its acknowledgement,
    # but the records of many requests share one batch per partition. The embedded broker
    # stores each batch as an object that every later fetch of the partition lists, so at
    # 6,000 records/s 2 ms batches made its CPU per fetch triple in two minutes; with 20 ms
    # it stays flat (bench/bench_broker_fetch.py). A real Kafka also gains (fewer requests).
    linger_ms: float = Field(20.0, ge=0, description="Producer batching delay (librdkafka linger.ms).")
    queue_max_messages: int = Field(
        100_000, ge=1, description="Producer queue capacity; a full queue answers 429."
    )
    insecure: bool = Field(
        False, description="Allow binding a non-loopback address without API keys."
    )
    admin_timeout_s: float = Field(
        5.0,
        gt=0,
        description="How long a Kinesis stream-management call (ListStreams, DescribeStream, "
        "CreateStream, DeleteStream) waits for the broker before a 503.",
    )
    kinesis_allow_delete: bool = Field(
        False,
        description="Let Kinesis DeleteStream (DELETE /streams/<name>) delete the table's topic "
        "and every record in it; off, DeleteStream answers 400 AccessDeniedException. For "
        "resetting a development pipeline with nothing writing to it or reading it.",
    )

    @field_validator("api_key_hashes")
    @classmethod
    def _sha256_hex(cls, value: list[str]) -> list[str]:
        hashes = [item.strip().lower() for item in value]
        for item in hashes:
            if len(item) != 64 or any(char not in "0123456789abcdef" for char in item):
                raise ValueError("api_key_hashes must be sha256 hex digests (64 hex characters)")
        return hashes


class LakeSettings(BaseModel):
    """The data lake and the sink that fills its raw layer."""

    root: str | None = Field(
        None, description="Local path or s3://bucket/prefix; unset means <data_dir>/lake."
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto, ...).")
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    sink_group_id: str = Field("pinpipe-lake-sink", description="Consumer group of the lake sink.")
    rotate_records: int = Field(100_000, ge=1, description="Close a file after this many records.")
    rotate_bytes: int = Field(64 * 1024 * 1024, ge=1, description="... or this many value bytes.")
    rotate_age_s: float = Field(60.0, gt=0, description="... or when its first record is this old.")
    max_buffer_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Memory cap of buffered records; the biggest buffers are written early above it."
    )
    storage_retry_s: float = Field(
        60.0, ge=0, description="How long transient storage errors are retried before the sink stops."
    )
    session_timeout_ms: int = Field(
        6000, ge=1000, description="Consumer group session timeout (small: fast rebalances)."
    )
    # 96 MiB keeps fetching while a file is written: 169k records/s at 365 MB peak RSS on the
    # 2-core machine, against ~103k/s with 16 MiB (bench/bench_lake_sink.py).
    fetch_queue_kbytes: int = Field(
        96 * 1024, ge=1024, description="librdkafka prefetch queue cap (queued.max.messages.kbytes)."
    )
    consume_batch: int = Field(10_000, ge=1, description="Records taken per consume call.")
    # Tansu answers a fetch only when this wait is over, not when records arrive: with
    # librdkafka's 500 ms, a broker killed under the sink took the records of its last ~0.1-0.3 s
    # (bench/bench_broker_death.py: 39 of 4,482 at 100 posts/s, 306 of 89,808 at 2,000 posts/s;
    # 0 and 0 at 50 ms). The cost: an idle sink asks every 50 ms.
    fetch_wait_max_ms: int = Field(
        50, ge=1, description="Longest a fetch waits for records (fetch.wait.max.ms)."
    )


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


class DashboardSettings(BaseModel):
    """The dashboard (``pinpipe dashboard``, started by ``pinpipe up``): one read-only page."""

    host: str = Field("127.0.0.1", description="Bind address of the dashboard.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the page, /api, /healthz and /metrics.")
    metrics_urls: dict[str, str] = Field(
        default_factory=dict,
        description="Components' /metrics addresses by name (ingest, lake-sink, stream); unset ones "
        "come from a running `pinpipe up` or the default ports.",
    )


class UpSettings(BaseModel):
    """``pinpipe up``: the ports of what it starts, and how it supervises the processes."""

    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    lake_metrics_port: int = Field(9101, ge=0, le=65535, description="Lake sink /metrics; 0: a free port.")
    stream_metrics_port: int = Field(9102, ge=0, le=65535, description="Stream job /metrics; 0: a free port.")
    health_timeout_s: float = Field(120.0, gt=0, description="How long a component may take to become healthy.")
    restart_backoff_s: float = Field(1.0, gt=0, description="First restart delay; doubles on each restart.")
    restart_backoff_max_s: float = Field(30.0, gt=0, description="Longest restart delay.")
    max_restarts: int = Field(5, ge=0, description="Restarts allowed within restart_window_s before giving up.")
    restart_window_s: float = Field(300.0, gt=0, description="Window of max_restarts.")
    stop_timeout_s: float = Field(
        30.0, gt=0, description="SIGTERM grace before SIGKILL (the sink flushes, the stream ends its batch)."
    )


class Settings(BaseSettings):
    """Everything configurable in pinpipe."""

    model_config = SettingsConfigDict(
        env_prefix="PINPIPE_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Field(Path("data"), description="Embedded services' state, the lake, logs.")
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    source: SourceSettings = Field(default_factory=SourceSettings)
    emulator: EmulatorSettings = Field(default_factory=EmulatorSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    lake: LakeSettings = Field(default_factory=LakeSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    speed: SpeedSettings = Field(default_factory=SpeedSettings)
    up: UpSettings = Field(default_factory=UpSettings)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Detached services outlive the directory a command was started from.
        return value.expanduser().resolve()

    @property
    def run_dir(self) -> Path:
        """Where running embedded services record their pid and address."""
        return self.data_dir / "run"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


class ConfigFileError(ValueError):
    """The named config file does not exist; retrying will not help."""


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the effective settings: defaults < config file < ``PINPIPE_*`` env < ``overrides``.

    ``overrides`` use the field names of :class:`Settings` (nested models as dicts).
    """
    explicit = config_file or os.environ.get("PINPIPE_CONFIG")
    path = Path(explicit) if explicit else DEFAULT_CONFIG_FILE
    if explicit and not path.is_file():
        raise ConfigFileError(f"config file not found: {path}")
    token = _config_file.set(path if path.is_file() else None)
    try:
        return Settings(**overrides)
    finally:
        _config_file.reset(token)


_SECRET_OPTION = re.compile(r"password|secret|jaas|token|credential", re.IGNORECASE)
"""Free-form client options (``client_options``, ``java_client_options``) whose value is a secret."""


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret replaced by ``**********``.

    ``SecretStr`` fields mask themselves; in the free-form option maps, a value whose option
    name looks like a credential (``sasl.password``, ``sasl.jaas.config``) is masked too.
    """

    def mask(data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {
            key: "**********" if isinstance(value, str) and _SECRET_OPTION.search(key) else mask(value)
            for key, value in data.items()
        }

    return mask(settings.model_dump(mode="json"))
