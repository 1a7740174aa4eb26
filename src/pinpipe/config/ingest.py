"""Settings of the HTTP ingestion API."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator


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

