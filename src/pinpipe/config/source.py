"""Settings of the emulated source and of the emulator that posts its rows."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


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

