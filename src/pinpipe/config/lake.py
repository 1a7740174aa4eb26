"""Settings of the data lake and of the sink that fills its raw layer."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


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

