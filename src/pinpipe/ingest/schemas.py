"""The wire shapes of the ingest API, for its OpenAPI document.

Bodies are parsed by the routes themselves (see :mod:`pinpipe.ingest.body`), so these models
document rather than validate: :func:`request_body` references them from a route's
``openapi_extra`` and :func:`install_openapi` adds them to ``components.schemas``.
Reply models are used as ``responses=`` of the routes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pinpipe.events import RawGeo, RawPin, RawUser
from pinpipe.ingest.streams import MAX_SHARD_COUNT


class ErrorBody(BaseModel):
    """Every error answer (the Kafka REST Proxy's error body)."""

    error_code: int
    message: str


# --- Kafka REST Proxy v2 ---------------------------------------------------------------------


class RestProxyRecord(BaseModel):
    """One record; ``key`` and ``partition`` are accepted and ignored (pinpipe keys by the
    record's natural key and lets the partitioner place it)."""

    value: RawPin | RawGeo | RawUser
    key: Any = None
    partition: int | None = None


class RestProxyRequest(BaseModel):
    records: list[RestProxyRecord]


class RestProxyOffset(BaseModel):
    partition: int | None
    offset: int | None
    error_code: int | None
    error: str | None


class RestProxyReply(BaseModel):
    offsets: list[RestProxyOffset]
    key_schema_id: int | None = None
    value_schema_id: int | None = None


class TopicReplica(BaseModel):
    broker: int
    leader: bool
    in_sync: bool


class TopicPartition(BaseModel):
    partition: int
    leader: int
    replicas: list[TopicReplica]


class TopicInfo(BaseModel):
    name: str
    configs: dict[str, str]
    partitions: list[TopicPartition]


# --- Kinesis through API Gateway ---------------------------------------------------------------


class KinesisPutRecord(BaseModel):
    """``Data`` is the row object, or the row's JSON base64-encoded (or as JSON text)."""

    model_config = ConfigDict(populate_by_name=True)

    StreamName: str | None = None
    Data: RawPin | RawGeo | RawUser | str
    PartitionKey: str | None = None


class KinesisBatchEntry(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    data: RawPin | RawGeo | RawUser | str
    partition_key: str | None = Field(None, alias="partition-key")


class KinesisPutRecords(BaseModel):
    """API Gateway's PutRecords mapping: ``{"records":[{"data":..., "partition-key":...}]}``
    (``Records``/``Data``/``PartitionKey`` are accepted too)."""

    records: list[KinesisBatchEntry]


class KinesisRecordReply(BaseModel):
    SequenceNumber: str
    ShardId: str


class KinesisBatchResult(BaseModel):
    SequenceNumber: str | None = None
    ShardId: str | None = None
    ErrorCode: str | None = None
    ErrorMessage: str | None = None


class KinesisBatchReply(BaseModel):
    FailedRecordCount: int
    Records: list[KinesisBatchResult]


class KinesisCreateStream(BaseModel):
    """CreateStream's body (optional). The stream's name is the path's; other fields of
    Kinesis's request (``StreamName``, ``StreamModeDetails``) are accepted and ignored."""

    ShardCount: int | None = Field(
        None, ge=1, le=MAX_SHARD_COUNT,
        description="Partitions of the table's topic; default broker.partitions.",
    )


class KinesisErrorBody(BaseModel):
    """Every error answer of the stream-management routes but 401: Kinesis's error body."""

    model_config = ConfigDict(populate_by_name=True)

    type: str = Field(alias="__type", description="e.g. ResourceNotFoundException")
    message: str


class KinesisEmptyReply(BaseModel):
    """CreateStream and DeleteStream answer ``{}``."""


class KinesisStreamModeDetails(BaseModel):
    StreamMode: str = "PROVISIONED"


class KinesisStreamSummary(BaseModel):
    StreamName: str
    StreamARN: str
    StreamStatus: str
    StreamModeDetails: KinesisStreamModeDetails


class KinesisListStreamsReply(BaseModel):
    StreamNames: list[str]
    HasMoreStreams: bool
    NextToken: str | None = Field(None, description="Present when HasMoreStreams.")
    StreamSummaries: list[KinesisStreamSummary]


class KinesisHashKeyRange(BaseModel):
    StartingHashKey: str
    EndingHashKey: str


class KinesisSequenceNumberRange(BaseModel):
    StartingSequenceNumber: str = Field(description="The partition's first offset.")


class KinesisShard(BaseModel):
    ShardId: str
    HashKeyRange: KinesisHashKeyRange
    SequenceNumberRange: KinesisSequenceNumberRange


class KinesisEnhancedMetrics(BaseModel):
    ShardLevelMetrics: list[str]


class KinesisStreamDescription(BaseModel):
    StreamName: str
    StreamARN: str
    StreamStatus: str
    StreamModeDetails: KinesisStreamModeDetails
    Shards: list[KinesisShard]
    HasMoreShards: bool
    RetentionPeriodHours: int
    StreamCreationTimestamp: float = Field(
        description="Epoch seconds of the oldest record the topic holds; 0 when it holds none."
    )
    EnhancedMonitoring: list[KinesisEnhancedMetrics]
    EncryptionType: str


class KinesisDescribeStreamReply(BaseModel):
    StreamDescription: KinesisStreamDescription


# --- legacy and native -------------------------------------------------------------------------


class RecordResult(BaseModel):
    """One record's outcome; ``error`` is null when it was written."""

    table: str | None
    partition: int | None
    offset: int | None
    error: str | None


class NativeEvent(BaseModel):
    table: str = Field(description="pin, geo or user")
    value: RawPin | RawGeo | RawUser


class NativeReply(BaseModel):
    results: list[RecordResult]
    accepted: int
    rejected: int


class ReadyReply(BaseModel):
    """``/readyz``'s answer, 200 when ready, 503 (with Retry-After) when not."""

    status: str = Field(description="ready or unavailable")
    broker: str = Field(description="reachable or unreachable")
    queue_depth: int
    queue_full: bool


class HealthReply(BaseModel):
    status: str


# Models in components.schemas: the request bodies (referenced from ``openapi_extra``) and the
# error bodies (referenced by :func:`error_responses`).
COMPONENT_MODELS: tuple[type[BaseModel], ...] = (
    RestProxyRequest,
    KinesisPutRecord,
    KinesisPutRecords,
    KinesisCreateStream,
    NativeEvent,
    RawPin,
    RawGeo,
    RawUser,
    ErrorBody,
    KinesisErrorBody,
    RestProxyRecord,
    KinesisBatchEntry,
)
