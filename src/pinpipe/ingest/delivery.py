"""What a publish is: the messages given to the producer, the deliveries it answers with, and
how it fails (:class:`PublishError`: transient when the broker is away or the queue full,
terminal when the broker refused a record). The API's edge (:mod:`pinpipe.ingest.errors`) maps
each failure to its HTTP answer; nothing here knows HTTP."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError

from pinpipe.errors import PinpipeError, TerminalError, TransientError


class PublishError(PinpipeError):
    """Not every record of a publish was acknowledged; some may still have been written."""


class BrokerUnavailable(TransientError, PublishError):
    """The broker is unreachable (or the producer not running); retry after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueFull(TransientError, PublishError):
    """The producer's local queue is full: the client should slow down (``retry_after_s``)."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("Producer queue full; retry later.")
        self.retry_after_s = retry_after_s


class BrokerRefused(TerminalError, PublishError):
    """The broker refused a record for a reason retrying will not change (e.g. too large)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"The broker refused a record: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Message:
    """One record to produce."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, bytes]] | None = None



@dataclass(frozen=True, slots=True)
class Delivery:
    """Where an acknowledged record landed."""

    partition: int
    offset: int


class PendingBatch:
    """The delivery reports of one request's records; completed from the poll thread."""

    __slots__ = ("future", "loop", "remaining", "reports")

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[list[Any]] = loop.create_future()
        self.remaining = size
        self.reports: list[Any] = [None] * size

    def deliver(self, index: int, error: KafkaError | None, message: Any) -> None:
        # Runs in the poll thread only, so the counter needs no lock.
        self.reports[index] = (
            error if error is not None else Delivery(message.partition(), message.offset())
        )
        self.remaining -= 1
        if self.remaining == 0:
            try:
                self.loop.call_soon_threadsafe(_resolve, self.future, self.reports)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass


def _resolve(future: asyncio.Future[list[Any]], reports: list[Any]) -> None:
    if not future.done():
        future.set_result(reports)
