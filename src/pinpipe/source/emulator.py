"""The user emulator: posts random source rows to the ingest API, like the original script.

Each post is one random row number; the pin, geo and user rows of that row are sent in the
chosen wire format, so the same row arrives many times (duplicates are normal input). Posts
are paced to a rate by a schedule (post ``n`` is due at ``start + n / rate``), sent by
``concurrency`` workers, and retried on 429/503 and connection errors with exponential
backoff that honours ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import httpx
import orjson

from pinpipe.events import DatetimeStyle
from pinpipe.source.tables import SourceTables
from pinpipe.source.wire import WireFormat, WireRequest, encode_post, native_request

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
MAX_BACKOFF_S = 30.0


@dataclass
class EmulatorStats:
    """What the emulator did, counted in records (a post is three records)."""

    posts: int = 0
    requests: int = 0
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    retried: int = 0
    failed: int = 0
    latencies_s: list[float] = field(default_factory=list, repr=False)
    behind_s: float = 0.0  # how late the latest post left against its schedule, at worst

    def as_dict(self) -> dict[str, int]:
        return {
            "posts": self.posts,
            "requests": self.requests,
            "sent": self.sent,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "retried": self.retried,
            "failed": self.failed,
        }


@dataclass(frozen=True)
class EmulatorPlan:
    """What to send, how fast and for how long. ``count`` or ``duration_s`` bounds the run."""

    base_url: str
    wire_format: WireFormat = WireFormat.REST_PROXY
    user_id: str = "0a1b2c3d4e5f"
    datetime_style: DatetimeStyle = DatetimeStyle.ISO
    rate: float = 50.0
    count: int | None = None
    duration_s: float | None = None
    concurrency: int = 16
    max_retries: int = 5
    seed: int = 0
    batch_size: int = 1
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.count is None and self.duration_s is None:
            raise ValueError("an emulation needs a count or a duration")
        if self.batch_size > 1 and self.wire_format is not WireFormat.NATIVE:
            raise ValueError("batch_size > 1 needs the native wire format")


def retry_delay(attempt: int, retry_after: str | None, rng: random.Random) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): ``Retry-After`` if given, else backoff."""
    if retry_after:
        try:
            return min(MAX_BACKOFF_S, max(0.0, float(retry_after)))
        except ValueError:
            try:
                when = parsedate_to_datetime(retry_after).timestamp()
                return min(MAX_BACKOFF_S, max(0.0, when - time.time()))
            except (TypeError, ValueError):
                pass
    return min(MAX_BACKOFF_S, 0.1 * 2 ** (attempt - 1)) * (0.5 + rng.random() / 2)


def rejected_records(request: WireRequest, response: httpx.Response) -> int:
    """Records of a successful response that the API refused one by one."""
    if request.records == 1 and request.path.startswith(("/streams/", "/pin", "/geo", "/user")):
        return 0
    try:
        reply = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return 0
    if isinstance(reply, dict) and "offsets" in reply:
        return sum(1 for slot in reply["offsets"] if slot.get("error_code") is not None)
    if isinstance(reply, dict) and "rejected" in reply:
        return int(reply["rejected"])
    return 0


class Emulator:
    """Posts ``plan`` from ``tables``; ``on_progress(stats)`` is called after each request."""

    def __init__(
        self,
        tables: SourceTables,
        plan: EmulatorPlan,
        on_progress: Callable[[EmulatorStats], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.tables = tables
        self.plan = plan
        self.stats = EmulatorStats()
        self._on_progress = on_progress
        self._stop = stop  # set: no new request starts; those in flight finish and are counted
        # Seeded apart from the table generator, which uses the same seed: drawing rows from an
        # identical Random(seed) would replay the generator's own choices (its placeholder rows).
        self._rows = random.Random(f"pinpipe-emulator-rows:{plan.seed}")
        self._jitter = random.Random(f"pinpipe-emulator-jitter:{plan.seed}")

    def run(self) -> EmulatorStats:
        """Run the emulation to its end and return the counts."""
        return asyncio.run(self.run_async())

    async def run_async(self) -> EmulatorStats:
        plan = self.plan
        slots = itertools.count()
        started = time.monotonic()
        deadline = started + plan.duration_s if plan.duration_s is not None else None
        limits = httpx.Limits(max_connections=plan.concurrency, max_keepalive_connections=plan.concurrency)
        headers = {**plan.headers}
        async with httpx.AsyncClient(
            base_url=plan.base_url, limits=limits, timeout=plan.timeout_s, headers=headers
        ) as client:

            async def worker() -> None:
                for slot in slots:
                    if plan.count is not None and slot * plan.batch_size >= plan.count:
                        return
                    if self._stop is not None and self._stop.is_set():
                        return
                    due = started + slot / (plan.rate / plan.batch_size)
                    if deadline is not None and due >= deadline:
                        return
                    # Draw the rows before waiting, so the sequence follows the slots.
                    requests = self._next_requests(slot)
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    self.stats.behind_s = max(self.stats.behind_s, time.monotonic() - due)
                    for request in requests:
                        await self._send(client, request)

            await asyncio.gather(*(worker() for _ in range(plan.concurrency)))
        return self.stats

    def _next_requests(self, slot: int) -> list[WireRequest]:
        plan = self.plan
        size = plan.batch_size
        if plan.count is not None:
            size = min(size, plan.count - slot * plan.batch_size)
        # Rows are drawn in slot order from one generator, so a seed gives one sequence.
        posts = [self.tables.post(self._rows.randrange(len(self.tables))) for _ in range(size)]
        self.stats.posts += len(posts)
        if plan.wire_format is WireFormat.NATIVE:
            return [native_request(posts, plan.datetime_style)]
        return [
            request
            for post in posts
            for request in encode_post(post, plan.wire_format, plan.user_id, plan.datetime_style)
        ]

    async def _send(self, client: httpx.AsyncClient, request: WireRequest) -> None:
        stats = self.stats
        stats.requests += 1
        stats.sent += request.records
        headers = {"Content-Type": request.content_type}
        for attempt in range(1, self.plan.max_retries + 2):
            retry_after = None
            begun = time.perf_counter()
            try:
                response = await client.request(
                    request.method, request.path, content=request.body, headers=headers
                )
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code not in RETRYABLE_STATUS:
                stats.latencies_s.append(time.perf_counter() - begun)
                if response.is_success:
                    rejected = rejected_records(request, response)
                    stats.accepted += request.records - rejected
                    stats.rejected += rejected
                elif response.status_code >= 500:
                    stats.failed += request.records
                else:
                    stats.rejected += request.records
                break
            if attempt > self.plan.max_retries:
                stats.failed += request.records
                break
            if response is not None:
                retry_after = response.headers.get("Retry-After")
            stats.retried += 1
            await asyncio.sleep(retry_delay(attempt, retry_after, self._jitter))
        if self._on_progress is not None:
            self._on_progress(stats)
