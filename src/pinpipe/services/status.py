"""What ``pinpipe services up | down | status`` say about one service."""

from __future__ import annotations

from dataclasses import dataclass

EMBEDDED = "embedded"
EXTERNAL = "external"


@dataclass(frozen=True)
class ServiceStatus:
    """One service as shown by ``pinpipe status``; ``address`` never holds a secret."""

    name: str
    mode: str  # "embedded" | "external"
    address: str
    healthy: bool
    detail: str
    started_now: bool = False  # an embedded service this call started: the caller stops it
    # The broker's log is new and empty (a memory-storage broker started now, or a durable log
    # created now): the lake's raw files, the stream checkpoint and the speed tables of an
    # earlier log no longer match its offsets. False for a durable log started again.
    new_log: bool = False
