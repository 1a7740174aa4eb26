"""Embedded services: the Tansu broker (and its S3 server), PostgreSQL, and ``pinpipe up`` /
``down`` / ``status``.

Every external system has an embedded default started and stopped by pinpipe itself, and a
setting pointing at the real one; :mod:`pinpipe.services.resolve` chooses between them.
"""

from pinpipe.services.broker import (
    BrokerBinaryNotFound,
    BrokerError,
    BrokerStartError,
    EmbeddedBroker,
    broker_binary,
    broker_is_healthy,
)
from pinpipe.services.errors import ServiceError
from pinpipe.services.lifecycle import services_down, services_status, services_up
from pinpipe.services.pg_common import (
    DataDirNotAccessible,
    PostgresError,
    PostgresStartError,
    mask_dsn,
    postgres_is_healthy,
)
from pinpipe.services.postgres import EmbeddedPostgres
from pinpipe.services.resolve import (
    broker_log_is_durable,
    kafka_bootstrap,
    postgres_dsn,
)
from pinpipe.services.state import ServiceRecord, read_record, remove_record, write_record
from pinpipe.services.status import ServiceStatus
from pinpipe.services.topics import TopicError, delete_topics, describe_topics, ensure_topics

__all__ = [
    "BrokerBinaryNotFound",
    "BrokerError",
    "BrokerStartError",
    "DataDirNotAccessible",
    "EmbeddedBroker",
    "EmbeddedPostgres",
    "PostgresError",
    "PostgresStartError",
    "ServiceError",
    "ServiceRecord",
    "ServiceStatus",
    "TopicError",
    "broker_binary",
    "broker_is_healthy",
    "broker_log_is_durable",
    "delete_topics",
    "describe_topics",
    "ensure_topics",
    "kafka_bootstrap",
    "mask_dsn",
    "postgres_dsn",
    "postgres_is_healthy",
    "read_record",
    "remove_record",
    "services_down",
    "services_status",
    "services_up",
    "write_record",
]
