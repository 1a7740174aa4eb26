"""From decoded requests to acknowledged Kafka records: the part every wire format shares.

Each route turns its body into :class:`Incoming` records; :meth:`Ingestor.ingest` validates
them against the raw contracts (:func:`pinpipe.events.validate_raw`), produces the valid ones
to ``<prefix>.<table>`` and the invalid ones to the dead-letter topic, waits for the broker to
acknowledge all of them, and returns one :class:`Outcome` per record, in order.

Stored value of a valid record: compact JSON of the record as validated (client's field names,
order and extra fields; datetimes as ``format_utc`` text), key :func:`pinpipe.events.record_key`.

Dead-letter record (topic ``<prefix>.dlq``, key none), value compact JSON::

    {"table": "geo" | null,            # null when the table itself was unknown
     "source": "rest-proxy" | "kinesis" | "legacy" | "native",
     "reason": "latitude: Input should be less than or equal to 90",
     "original": "<the record as received, as text>",
     "original_encoding": "utf-8" | "base64",
     "received_at": "2024-05-01T12:00:00.123456Z"}

``original`` is the exact bytes where the wire has them per record (a Kinesis ``Data`` field,
an NDJSON line, a legacy body); inside a JSON batch it is the record re-serialised as compact
JSON (same content and key order, whitespace not kept). Bytes that are not UTF-8 are base64.
Headers ``pinpipe-reason`` and ``pinpipe-source`` repeat the reason and source.
"""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from pinpipe.events import InvalidRecord, Table, format_utc, record_key, topic_name, validate_raw
from pinpipe.ingest.delivery import Message, PublishError
from pinpipe.ingest.errors import TOO_LARGE, IngestError
from pinpipe.ingest.metrics import IngestMetrics
from pinpipe.ingest.publisher import Publisher


@dataclass(slots=True)
class Incoming:
    """One record as a route decoded it.

    ``value`` is the parsed JSON row; ``original`` the record's exact bytes when the wire format
    has them; ``error`` a problem found before validation (unknown table, undecodable data).
    """

    table: Table | None
    value: Any = None
    original: bytes | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one record: written (partition, offset) or rejected (error)."""

    table: Table | None
    partition: int | None = None
    offset: int | None = None
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.error is None


class Ingestor:
    """Validates, produces and awaits the records of one request."""

    def __init__(
        self,
        publisher: Publisher,
        topic_prefix: str,
        max_record_bytes: int,
        metrics: IngestMetrics,
    ) -> None:
        self.publisher = publisher
        self.max_record_bytes = max_record_bytes
        self.metrics = metrics
        self.topics = {table: topic_name(topic_prefix, table) for table in Table}
        self.dlq_topic = topic_name(topic_prefix, "dlq")

    async def ingest(self, records: list[Incoming], source: str) -> list[Outcome]:
        """All-or-error: every record is acknowledged (valid in its topic, invalid in the
        dead-letter topic) and the outcomes returned, or an :class:`IngestError` is raised.
        """
        messages: list[Message] = []
        rejected: dict[int, str] = {}
        received_at: str | None = None
        for index, record in enumerate(records):
            if record.error is None and record.table is not None:
                try:
                    stored = validate_raw(record.table, record.value)
                except InvalidRecord as exc:
                    record.error = exc.reason
                else:
                    value = orjson.dumps(stored)
                    self._check_size(index, len(value))
                    messages.append(
                        Message(self.topics[record.table], value, record_key(record.table, stored))
                    )
                    continue
            if record.error is None:  # no table and no reason: a route bug, still not a 500
                record.error = "record: unknown table"
            received_at = received_at or format_utc(datetime.now(UTC))
            messages.append(self._dead_letter(index, record, source, received_at))
            rejected[index] = record.error
        try:
            deliveries = await self._publish(messages)
        except PublishError:
            self._count(Counter((record.table, "failed") for record in records))
            raise
        outcomes: list[Outcome] = []
        counts: Counter[tuple[Table | None, str]] = Counter()
        for index, (record, delivery) in enumerate(zip(records, deliveries, strict=True)):
            if index in rejected:
                outcomes.append(Outcome(record.table, error=rejected[index]))
                counts[record.table, "rejected"] += 1
            else:
                outcomes.append(Outcome(record.table, delivery.partition, delivery.offset))
                counts[record.table, "accepted"] += 1
        self._count(counts)
        return outcomes

    def _count(self, counts: Counter[tuple[Table | None, str]]) -> None:
        # Once per (table, outcome), not once per record: label lookups are not free.
        for (table, outcome), count in counts.items():
            self.metrics.records.labels(_label(table), outcome).inc(count)

    async def _publish(self, messages: list[Message]) -> list[Any]:
        with self.metrics.produce_seconds.time():
            return await self.publisher.publish(messages)

    def _check_size(self, index: int, size: int) -> None:
        if size > self.max_record_bytes:
            raise IngestError(
                413,
                TOO_LARGE,
                f"Record {index} is too large: {size} bytes, the limit is "
                f"{self.max_record_bytes} bytes.",
            )

    def _dead_letter(self, index: int, record: Incoming, source: str, received_at: str) -> Message:
        original = record.original if record.original is not None else orjson.dumps(record.value)
        self._check_size(index, len(original))
        try:
            text, encoding = original.decode(), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(original).decode(), "base64"
        reason = record.error or "invalid"
        value = orjson.dumps(
            {
                "table": record.table.value if record.table else None,
                "source": source,
                "reason": reason,
                "original": text,
                "original_encoding": encoding,
                "received_at": received_at,
            }
        )
        headers = [("pinpipe-reason", reason.encode()), ("pinpipe-source", source.encode())]
        return Message(self.dlq_topic, value, None, headers)


def _label(table: Table | None) -> str:
    return table.value if table is not None else "unknown"
