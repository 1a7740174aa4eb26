"""The soak's load client: distinct records posted through the ingest API, every answer kept.

A post is one Kafka REST Proxy v2 request, ``POST /topics/<user_id>.<table>`` with ``batch``
records of one table (the tables take turns). Every record is distinct: a pin's ``unique_id``
and the ``ind`` of geo and user rows come from one counter per table, so each natural key is
sent by exactly one record. The other fields come from the generated source tables (real-world
text, placeholders), so cleaning has something to do.

Each record's ledger entry counts its answers: 200 (acknowledged, with the partition and offset
of its slot), 429/503 (refused: the same post is sent again after ``Retry-After``), no answer
(connection refused or reset, a timeout: sent again too, it may have been written) and anything
else (a failure of the soak, kept as an example). A post is retried until acknowledged or until
:meth:`LoadClient.finish` gives up.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import orjson

from pinpipe.events import DatetimeStyle, Table
from pinpipe.source.generator import generate_tables
from pinpipe.source.wire import REST_PROXY_CONTENT_TYPE, encode_row

TABLES = (Table.PIN, Table.GEO, Table.USER)
OK, REFUSED, NO_ANSWER, UNEXPECTED = "ok", "refused", "no answer", "unexpected"


@dataclass
class RecordState:
    """One distinct record and what the API answered to it."""

    table: Table
    key: str
    ok: int = 0
    refused: int = 0
    no_answer: int = 0
    unexpected: int = 0
    partition: int | None = None  # of its slot in the 200 answer
    offset: int | None = None

    @property
    def attempts(self) -> int:
        return self.ok + self.refused + self.no_answer + self.unexpected


@dataclass
class Post:
    table: Table
    keys: list[str]
    body: bytes
    attempts: int = 0


@dataclass
class Answer:
    """One request: when it was sent and answered (monotonic seconds), and how it ended."""

    sent: float
    answered: float
    outcome: str
    status: int | None


@dataclass
class LoadStats:
    posts: int = 0  # new posts (retries not counted)
    requests: int = 0
    started: float = 0.0
    stopped: float = 0.0
    behind_s: float = 0.0  # schedule given up because every request slot was busy
    statuses: dict[str, int] = field(default_factory=dict)  # "200", "503", "ConnectError", ...
    examples: list[str] = field(default_factory=list)  # unexpected answers, a few


class RecordFactory:
    """Distinct records built on generated source rows; keys unique to this soak (``tag``)."""

    def __init__(self, seed: int, tag: str, templates: int = 1000) -> None:
        self.tables = generate_tables(seed, templates)
        self.tag = tag
        self.counters = dict.fromkeys(TABLES, 0)
        self.namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"pinpipe-soak-{tag}")

    def make(self, table: Table) -> tuple[str, dict]:
        """The next record of ``table``: (its natural key as text, the row as JSON)."""
        n = self.counters[table]
        self.counters[table] = n + 1
        rows = self.tables.rows(table)
        row = dict(rows[n % len(rows)])
        if table is Table.PIN:
            row["index"] = n
            row["unique_id"] = key = str(uuid.uuid5(self.namespace, str(n)))
        else:
            row["ind"] = n
            key = str(n)
        return key, encode_row(row, DatetimeStyle.ISO)


class LoadClient:
    """Posts ``rate`` posts/s of ``batch`` records from a thread of its own (its own event loop)."""

    def __init__(self, base_url: str, *, rate: float, batch: int, seed: int, tag: str,
                 concurrency: int = 32, user_id: str = "soak", timeout_s: float = 30.0) -> None:
        self.base_url = base_url
        self.rate, self.batch, self.concurrency, self.timeout_s = rate, batch, concurrency, timeout_s
        self.user_id = user_id
        self.factory = RecordFactory(seed, tag)
        self.ledger: dict[tuple[str, str], RecordState] = {}
        self.answers: list[Answer] = []
        self.stats = LoadStats()
        self.pending: set[int] = set()  # ids of posts not acknowledged yet
        self._retry: deque[tuple[float, Post]] = deque()
        self._producing = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- control, from the soak's thread ---------------------------------------------------

    def start(self) -> None:
        self._producing.set()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="soak-load",
                                        daemon=True)
        self._thread.start()

    def stop_new(self) -> None:
        """No new posts from now on; refused ones are still retried."""
        self._producing.clear()

    def finish(self, retry_s: float) -> int:
        """Wait up to ``retry_s`` for every post to be acknowledged, then stop; returns the posts
        never acknowledged."""
        self.stop_new()
        deadline = time.monotonic() + retry_s
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.2)
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 10)
        self.stats.stopped = time.monotonic()
        return len(self.pending)

    def answer_count(self) -> int:
        with self._lock:
            return len(self.answers)

    def first_ok_after(self, moment: float, start: int = 0) -> float | None:
        """When the first request sent at or after ``moment`` was answered 200 (None: none yet).
        ``start``: answers before this index (:meth:`answer_count` before ``moment``) are older."""
        with self._lock:
            answers = self.answers[start:]
        found = [a.answered for a in answers if a.sent >= moment and a.outcome == OK]
        return min(found) if found else None

    def by_minute(self) -> list[tuple[int, int, float | None, float | None]]:
        """Per minute of the load: requests answered 200, and their latency p50 and p99 (s)."""
        with self._lock:
            answers = [a for a in self.answers if a.outcome == OK]
        minutes: dict[int, list[float]] = {}
        for answer in answers:
            minutes.setdefault(int((answer.sent - self.stats.started) // 60), []).append(answer.answered - answer.sent)
        out = []
        for minute, latencies in sorted(minutes.items()):
            latencies.sort()
            out.append((minute, len(latencies), latencies[len(latencies) // 2],
                        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]))
        return out

    # --- the loop ---------------------------------------------------------------------------

    def _new_post(self) -> Post:
        table = TABLES[self.stats.posts % len(TABLES)]
        keys, values = [], []
        for _ in range(self.batch):
            key, value = self.factory.make(table)
            keys.append(key)
            values.append({"value": value})
            self.ledger[(table.value, key)] = RecordState(table, key)
        self.stats.posts += 1
        post = Post(table, keys, orjson.dumps({"records": values}))
        self.pending.add(id(post))
        return post

    async def _main(self) -> None:
        import httpx

        queue: asyncio.Queue[Post] = asyncio.Queue(maxsize=self.concurrency * 2)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(base_url=self.base_url, limits=limits, timeout=self.timeout_s) as client:
            workers = [asyncio.create_task(self._worker(client, queue)) for _ in range(self.concurrency)]
            self.stats.started = time.monotonic()
            await self._feed(queue)
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _feed(self, queue: asyncio.Queue[Post]) -> None:
        """New posts on schedule (a schedule that slipped is not caught up by more than a
        second's worth), retries when due."""
        began, made = time.monotonic(), 0
        while not self._stopping.is_set():
            now = time.monotonic()
            while self._retry and self._retry[0][0] <= now:
                await queue.put(self._retry.popleft()[1])
            if self._producing.is_set():
                due = int((now - began) * self.rate)
                if due - made > self.rate:  # fell behind (the API was slow): do not burst
                    self.stats.behind_s += (due - made - int(self.rate)) / self.rate
                    made = due - int(self.rate)
                while made < due and not queue.full():
                    queue.put_nowait(self._new_post())
                    made += 1
            await asyncio.sleep(0.005)

    async def _worker(self, client, queue: asyncio.Queue[Post]) -> None:
        while True:
            post = await queue.get()
            post.attempts += 1
            retry_after = await self._send(client, post)
            if retry_after is not None:
                self._retry.append((time.monotonic() + retry_after, post))

    async def _send(self, client, post: Post) -> float | None:
        """Post it once; the delay before sending it again, or None when it is done with."""
        import httpx

        path = f"/topics/{self.user_id}.{post.table.value}"
        sent = time.monotonic()
        status: int | None = None
        try:
            response = await client.post(path, content=post.body,
                                         headers={"Content-Type": REST_PROXY_CONTENT_TYPE})
            status = response.status_code
        except httpx.HTTPError as error:
            label, outcome = type(error).__name__, NO_ANSWER
        else:
            label = str(status)
            outcome = OK if status == 200 else REFUSED if status in (429, 503) else UNEXPECTED
        self.stats.requests += 1
        self.stats.statuses[label] = self.stats.statuses.get(label, 0) + 1
        if outcome == OK:
            outcome = self._acknowledged(post, response)
        else:
            for key in post.keys:
                state = self.ledger[(post.table.value, key)]
                if outcome == REFUSED:
                    state.refused += 1
                elif outcome == NO_ANSWER:
                    state.no_answer += 1
                else:
                    state.unexpected += 1
            if outcome == UNEXPECTED:
                self._example(f"{post.table.value}: HTTP {status}: {response.text[:300]}")
        with self._lock:
            self.answers.append(Answer(sent, time.monotonic(), outcome, status))
        if outcome == OK or outcome == UNEXPECTED:
            self.pending.discard(id(post))
            return None
        if outcome == REFUSED:
            try:
                return float(response.headers.get("Retry-After", "1"))
            except ValueError:
                return 1.0
        return 1.0

    def _acknowledged(self, post: Post, response) -> str:
        """Record the slots of a 200; a slot with an error (our records are valid) is unexpected."""
        try:
            slots = response.json()["offsets"]
        except (ValueError, KeyError, TypeError):
            slots = []
        if len(slots) != len(post.keys):
            self._example(f"{post.table.value}: 200 with {len(slots)} slots for {len(post.keys)} records")
        outcome = OK
        for key, slot in zip(post.keys, slots):
            state = self.ledger[(post.table.value, key)]
            if slot.get("error_code") is None:
                state.ok += 1
                state.partition, state.offset = slot.get("partition"), slot.get("offset")
            else:
                state.unexpected += 1
                outcome = UNEXPECTED
                self._example(f"{post.table.value} {key}: 200 with error {slot.get('error')!r}")
        return outcome

    def _example(self, text: str) -> None:
        if len(self.stats.examples) < 20:
            self.stats.examples.append(f"{time.strftime('%H:%M:%S')} {text}")


class LoadProcess:
    """A :class:`LoadClient` in a process of its own, with the same interface.

    In the soak's process the load shared one interpreter (and its GIL) with the recovery
    polling and the status scrapes, and reached ~60-80 of 200 posts/s. The child serves the
    calls the soak makes while it runs over a pipe; :meth:`finish` brings the client's whole
    state (ledger, answers, stats) back. Both processes read the same monotonic clock, so the
    child's answer times compare with the soak's fault times.
    """

    def __init__(self, base_url: str, **options) -> None:
        import multiprocessing

        self.concurrency = options.get("concurrency", 32)
        self._lock = threading.Lock()
        context = multiprocessing.get_context("spawn")  # no copy of the soak's threads
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve_load, args=(child, base_url, options),
                                        name="soak-load", daemon=True)
        self._final: LoadClient | None = None

    def _call(self, method: str, *args):
        with self._lock:
            self._conn.send((method, args))
            ok, value = self._conn.recv()
        if not ok:
            raise RuntimeError(f"the load process failed in {method}: {value}")
        return value

    def start(self) -> None:
        self._process.start()
        self._call("start")

    def running(self) -> bool:
        return self._final is None and self._process.is_alive()

    def stop_new(self) -> None:
        self._call("stop_new")

    def answer_count(self) -> int:
        return self._final.answer_count() if self._final else self._call("answer_count")

    def first_ok_after(self, moment: float, start: int = 0) -> float | None:
        if self._final is not None:
            return self._final.first_ok_after(moment, start)
        return self._call("first_ok_after", moment, start)

    def finish(self, retry_s: float) -> int:
        """As :meth:`LoadClient.finish`; afterwards ``ledger``, ``stats`` and ``by_minute`` are
        the child's."""
        if self._final is not None:
            return len(self._final.pending)
        pending, state = self._call("finish", retry_s)
        self._final = LoadClient.__new__(LoadClient)
        self._final.__dict__.update(state)
        self._final._lock = threading.Lock()
        self._conn.send(("exit", ()))
        self._process.join(timeout=30)
        return pending

    def __getattr__(self, name: str):
        # ledger, stats, by_minute, ...: the child's, once it has finished
        final = self.__dict__.get("_final")
        if final is None:
            if name == "stats":
                return LoadStats()  # nothing to report before the end
            raise AttributeError(name)
        return getattr(final, name)


def _serve_load(conn, base_url: str, options: dict) -> None:
    """The load process: runs a :class:`LoadClient` and answers the soak's calls."""
    client = LoadClient(base_url, **options)
    while True:
        method, args = conn.recv()
        try:
            if method == "exit":
                return
            if method == "finish":
                pending = client.finish(*args)
                state = {k: v for k, v in client.__dict__.items()
                         if k not in ("_thread", "_lock", "_producing", "_stopping")}
                conn.send((True, (pending, state)))
                continue
            conn.send((True, getattr(client, method)(*args)))
        except Exception as error:  # the soak reports it
            conn.send((False, f"{type(error).__name__}: {error}"))
