"""The broker goes away mid-run: 503 + Retry-After within a bounded time, never a success for a
record the broker does not hold, and recovery on its own when the broker is back.

The embedded broker keeps records in memory only, so what it held before a stop cannot be read
after it. The "nothing acknowledged is lost" count is therefore taken across a *hang*
(SIGSTOP/SIGCONT: the broker stops answering but keeps its records), and the real stop/restart
checks the 503s during the outage and the recovery afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from pinpipe.services.broker import EmbeddedBroker
from tests.ingest.conftest import consume, free_port, make_settings, running_api
from tests.ingest.rows import PIN

pytestmark = pytest.mark.integration

PRODUCE_TIMEOUT_S = 2.0
RETRY_AFTER_S = 1
BOUNDED_S = PRODUCE_TIMEOUT_S + 3.0  # the longest any answer may take during an outage
REST_PROXY = {"Content-Type": "application/vnd.kafka.json.v2+json"}


@dataclass(frozen=True)
class Answer:
    unique_id: str
    started: float
    elapsed: float
    status: int
    retry_after: str | None


def post_pin(client: httpx.Client, unique_id: str) -> Answer:
    body = orjson.dumps({"records": [{"value": {**PIN, "unique_id": unique_id}}]})
    started = time.monotonic()
    response = client.post("/topics/u.pin", content=body, headers=REST_PROXY)
    return Answer(unique_id, started, time.monotonic() - started, response.status_code,
                  response.headers.get("retry-after"))  # fmt: skip


class Senders:
    """Threads posting distinct pins as fast as the API answers, recording every answer."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.answers: list[Answer] = []
        self.stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]

    def _run(self, number: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            count = 0
            while not self.stop.is_set():
                self.answers.append(post_pin(client, f"outage-{number}-{count}"))
                count += 1

    def __enter__(self) -> Senders:  # noqa: PYI034
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def wait_for(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition(list(self.answers)):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)


@pytest.fixture
def private_broker():
    """A broker of this test's own, on a fixed port so that it can be restarted on it."""
    log_dir = Path(tempfile.mkdtemp(prefix="pinpipe-outage-"))
    port = free_port()
    brokers = [EmbeddedBroker(log_dir, port=port)]
    brokers[0].start()

    def restart() -> EmbeddedBroker:
        brokers.append(EmbeddedBroker(log_dir, port=port))
        brokers[-1].start()
        return brokers[-1]

    yield brokers[0], restart
    for broker in brokers:
        if broker.pid is not None:
            os.kill(broker.pid, signal.SIGCONT)
        broker.stop()
    shutil.rmtree(log_dir, ignore_errors=True)


def test_outage_never_acknowledges_an_unwritten_record_and_recovers(private_broker):
    broker, restart = private_broker
    settings = make_settings(
        broker.bootstrap_servers, produce_timeout_s=PRODUCE_TIMEOUT_S, retry_after_s=RETRY_AFTER_S
    )
    topic = f"{settings.broker.topic_prefix}.pin"
    with running_api(settings) as api:
        # 1. Traffic flows; then the broker hangs mid-run.
        with Senders(api.url) as senders:
            senders.wait_for(lambda a: sum(x.status == 200 for x in a) >= 30, 20, "30 successes")
            frozen_at = time.monotonic()
            os.kill(broker.pid, signal.SIGSTOP)
            senders.wait_for(
                lambda a: sum(x.status == 503 and x.started > frozen_at for x in a) >= 20,
                BOUNDED_S + 10,
                "503s during the hang",
            )
        answers = list(senders.answers)
        os.kill(broker.pid, signal.SIGCONT)

        acknowledged = {a.unique_id for a in answers if a.status == 200}
        during = [a for a in answers if a.started > frozen_at]
        assert during and all(a.status in (429, 503) for a in during), {a.status for a in during}
        failed = [a for a in answers if a.status != 200]
        assert all(a.status in (429, 503) and a.retry_after == str(RETRY_AFTER_S) for a in failed)
        assert max(a.elapsed for a in failed) <= BOUNDED_S

        held = {
            record.key.decode()
            for record in consume(broker.bootstrap_servers, topic, len(acknowledged), settle=1.0)
        }
        assert acknowledged <= held, f"acknowledged but not held: {sorted(acknowledged - held)[:5]}"

        # 2. The broker process stops: 503s (fast once the API knows), readiness says so.
        broker.stop()
        with httpx.Client(base_url=api.url, timeout=30.0) as client:
            down = [post_pin(client, f"down-{n}") for n in range(5)]
            assert [a.status for a in down] == [503] * 5
            assert all(a.retry_after == str(RETRY_AFTER_S) and a.elapsed <= BOUNDED_S for a in down)
            assert client.get("/readyz").status_code == 503
            body = client.post(
                "/topics/u.pin", json={"records": [{"value": PIN}]}, headers=REST_PROXY
            )
            assert body.json()["error_code"] == 50301

            # 3. Back on the same port: the API recovers by itself.
            restarted = restart()
            deadline = time.monotonic() + 30
            while (answer := post_pin(client, "after-restart")).status != 200:
                assert answer.status in (429, 503) and answer.retry_after == str(RETRY_AFTER_S)
                assert time.monotonic() < deadline, "the API did not recover within 30 s"
            assert client.get("/readyz").status_code == 200
        (record,) = consume(restarted.bootstrap_servers, topic, 1)
        assert record.key == b"after-restart"
