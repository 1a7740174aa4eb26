"""Kafka -> raw Parquet: the lake sink (exactly once), its file layout, storage and checks."""

from pinpipe.lake.errors import LakeError, SinkStopped, StorageError
from pinpipe.lake.inventory import (
    PartitionCheck,
    PartitionInfo,
    VerifyReport,
    list_partitions,
    verify_lake,
)
from pinpipe.lake.sink import LakeSink, SinkStats, run_sink
from pinpipe.lake.storage import LakeStorage, lake_root

__all__ = [
    "LakeError",
    "LakeSink",
    "LakeStorage",
    "PartitionCheck",
    "PartitionInfo",
    "SinkStats",
    "SinkStopped",
    "StorageError",
    "VerifyReport",
    "lake_root",
    "list_partitions",
    "run_sink",
    "verify_lake",
]
