"""``pinpipe tail``: one topic's records, like ``kcat -C``, from an assign-only consumer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

from pinpipe.events import format_utc
from pinpipe.services.inspect.offsets import (
    InspectError,
    UnknownTopicError,
    assign_only_consumer,
    partition_ends,
    partitions_known_to,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class TailRecord:
    """One record as the broker holds it; ``timestamp`` is ISO-8601 UTC (None if the broker
    has none). Header values are bytes (or None), in the order the producer gave them."""

    topic: str
    partition: int
    offset: int
    timestamp: str | None
    key: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    value: bytes | None

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` as text (None if absent or null)."""
        for header, value in reversed(self.headers):
            if header == name:
                return None if value is None else value.decode(errors="replace")
        return None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form: key, value and header values as text when they are UTF-8, else
        base64, said by ``key_encoding`` / ``value_encoding`` ("utf-8" | "base64", null when
        the field is null) and by a third element ``"base64"`` of such a header's pair."""
        key, key_encoding = _as_text(self.key)
        value, value_encoding = _as_text(self.value)
        headers: list[list[str | None]] = []
        for name, raw in self.headers:
            text, encoding = _as_text(raw)
            headers.append([name, text] if encoding != "base64" else [name, text, "base64"])
        return {
            "topic": self.topic, "partition": self.partition, "offset": self.offset,
            "timestamp": self.timestamp, "key": key, "key_encoding": key_encoding,
            "headers": headers, "value": value, "value_encoding": value_encoding,
        }  # fmt: skip

    def as_text(self) -> str:
        """Readable lines: the coordinates, one line per header, the value (``null`` for none;
        bytes that are not UTF-8 are shown as base64, said in brackets)."""
        data = self.as_dict()

        def shown(text: str | None, encoding: str | None) -> str:
            if text is None:
                return "null"
            return f"[base64] {text}" if encoding == "base64" else text

        lines = [f"{self.topic} partition {self.partition} offset {self.offset}"
                 f" at {self.timestamp or '(no timestamp)'}"
                 f" key {shown(data['key'], data['key_encoding'])}"]  # fmt: skip
        for name, text, *encoding in data["headers"]:
            lines.append(f"  header {name}: {shown(text, encoding[0] if encoding else None)}")
        lines.append(f"  value {shown(data['value'], data['value_encoding'])}")
        return "\n".join(lines)


def _as_text(raw: bytes | None) -> tuple[str | None, str | None]:
    import base64

    if raw is None:
        return None, None
    try:
        return raw.decode(), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode(), "base64"


def _timestamp(message: Any) -> str | None:
    from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

    kind, millis = message.timestamp()
    if kind == TIMESTAMP_NOT_AVAILABLE or millis is None or millis < 0:
        return None
    return format_utc(_EPOCH + timedelta(milliseconds=millis))


def _record(message: Any) -> TailRecord:
    return TailRecord(
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        timestamp=_timestamp(message),
        key=message.key(),
        headers=tuple((name, value) for name, value in message.headers() or ()),
        value=message.value(),
    )


class Tail:
    """Reads one topic's records, like ``kcat -C``: an assign-only consumer, nothing committed.

    On entering, the topic (and ``partition``, if given) is looked up, and the consumer is
    placed at the first record of each partition, or with ``from_end`` at each partition's end
    (probed by :func:`partition_ends`; :attr:`start_offsets` says where). Then iterate
    :meth:`records`.
    """

    def __init__(
        self,
        client_config: dict,
        topic: str,
        partition: int | None = None,
        from_end: bool = False,
        timeout_s: float = 30.0,
    ) -> None:
        self.client_config = client_config
        self.topic = topic
        self.partition = partition
        self.from_end = from_end
        self.timeout_s = timeout_s
        self.partitions: list[int] = []
        self.start_offsets: dict[int, int | None] = {}  # None: the first record held
        self._consumer: Any = None

    def __enter__(self) -> Self:
        self._consumer = assign_only_consumer(self.client_config, **{"fetch.wait.max.ms": 100})
        try:
            self._place()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _place(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        found = partitions_known_to(self._consumer, self.client_config, min(self.timeout_s, 10))
        if self.topic not in found:
            raise UnknownTopicError(f"no topic {self.topic!r} on the broker")
        partitions = found[self.topic]
        if self.partition is not None:
            if self.partition not in partitions:
                raise UnknownTopicError(
                    f"topic {self.topic!r} has no partition {self.partition}"
                    f" (its partitions: {', '.join(map(str, partitions))})"
                )
            partitions = [self.partition]
        self.partitions = partitions
        if self.from_end:
            ends = partition_ends(self.client_config, [(self.topic, p) for p in partitions],
                                  timeout_s=min(self.timeout_s, 10.0))  # fmt: skip
            missing = [p for (_, p), end in ends.items() if end is None]
            if missing:
                raise InspectError(
                    f"no end offset for {self.topic} partitions {missing}: the broker did not "
                    "answer a fetch in time", transient=True,
                )  # fmt: skip
            self.start_offsets = {p: ends[(self.topic, p)] for p in partitions}
        else:
            self.start_offsets = dict.fromkeys(partitions)
        self._consumer.assign([
            TopicPartition(self.topic, p, OFFSET_BEGINNING if offset is None else offset)
            for p, offset in self.start_offsets.items()
        ])  # fmt: skip

    def records(self, count: int | None = None, follow: bool = False) -> Iterator[TailRecord]:
        """The records in offset order per partition (partitions interleaved as fetched).

        Stops after ``count`` records; without ``follow`` also once every partition reported
        its end (raising :class:`InspectError` if the broker stays silent for ``timeout_s``);
        with ``follow`` it waits for new records until the caller stops iterating.
        """
        from confluent_kafka import KafkaError, TopicPartition

        if self._consumer is None:
            raise RuntimeError("use Tail as a context manager: with Tail(...) as tail")
        left = count
        at_end: set[int] = set()
        heard = time.monotonic()
        while (left is None or left > 0) and (follow or len(at_end) < len(self.partitions)):
            messages = self._consumer.consume(min(left or 500, 500), timeout=0.1)
            if messages:
                heard = time.monotonic()
            elif not follow and time.monotonic() - heard > self.timeout_s:
                waiting = sorted(set(self.partitions) - at_end)
                raise InspectError(
                    f"no answer for {self.topic} partitions {waiting} in {self.timeout_s:g} s",
                    transient=True,
                )
            for message in messages:
                error = message.error()
                if error is None:
                    yield _record(message)
                    if left is not None:
                        left -= 1
                        if left == 0:
                            return
                elif error.code() == KafkaError._PARTITION_EOF:
                    if not follow:
                        at_end.add(message.partition())
                        self._consumer.pause([TopicPartition(self.topic, message.partition())])
                elif error.fatal() or error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise InspectError(f"reading {self.topic}: {error.str()}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()
