"""Kafka -> raw Parquet: the lake sink (exactly once), its file layout, storage and checks.

The sink contract is :class:`BatchingSink` (``add``, ``flush``, the subclass's ``write``);
:class:`ParquetSink` implements it for raw Parquet files and :class:`LakeSink` feeds it from
Kafka, committing after each flush (``run_sink`` runs it)."""

from pinpipe.lake.buffer import Batch, BatchingSink
from pinpipe.lake.errors import LakeError, SinkStopped, StorageError
from pinpipe.lake.inventory import (
    PartitionCheck,
    PartitionInfo,
    VerifyReport,
    list_partitions,
    verify_lake,
)
from pinpipe.lake.parquet import ParquetSink
from pinpipe.lake.sink import LakeSink, SinkStats, run_sink
from pinpipe.lake.storage import LakeStorage, lake_root

__all__ = [
    "Batch",
    "BatchingSink",
    "LakeError",
    "LakeSink",
    "LakeStorage",
    "ParquetSink",
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
