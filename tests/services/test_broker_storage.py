"""The embedded broker's two storages: a durable log in the local S3 server, and memory.

Real processes throughout: Tansu, the S3 server, librdkafka clients; SIGKILL, not mocks.
"""

import json
import os
import signal
import time
import urllib.error
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from pinpipe.config import load_settings
from pinpipe.processes import pid_is_alive, process_cmdline, process_table
from pinpipe.services import lifecycle
from pinpipe.services.broker import EmbeddedBroker, cluster_id, free_port
from pinpipe.services.broker_s3 import BrokerS3Server, load_credentials
from pinpipe.services.state import read_record

pytestmark = pytest.mark.integration

TOPIC = "t.pin"
PARTITIONS = 2


@pytest.fixture
def settings(traversable_dir):
    # An external PostgreSQL on a closed port: services_up only health-checks it (unhealthy),
    # so these tests start the broker and its S3 server alone.
    return load_settings(
        data_dir=traversable_dir / "data",
        broker={"topic_prefix": "t", "partitions": PARTITIONS, "storage": "s3"},
        postgres={"dsn": f"postgresql://nobody:none@127.0.0.1:{free_port()}/none"},
    )


def _produce(bootstrap: str, values: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Produce with acks=all; returns what the broker acknowledged: (partition, offset) -> value."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5}
    )
    acked: dict[tuple[int, int], bytes] = {}

    def delivered(err, msg):
        assert err is None, err
        acked[(msg.partition(), msg.offset())] = msg.value()

    for i, value in enumerate(values):
        producer.produce(TOPIC, value=value, partition=i % PARTITIONS, on_delivery=delivered)
    assert producer.flush(15) == 0
    assert len(acked) == len(values)
    return acked


def _fetch_all(bootstrap: str, expected: int, timeout: float = 15) -> dict[tuple[int, int], bytes]:
    """Every record of TOPIC from offset 0, until ``expected`` arrived or the deadline passed."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex}", "log_level": 0}
    )
    consumer.assign([TopicPartition(TOPIC, partition, 0) for partition in range(PARTITIONS)])
    fetched: dict[tuple[int, int], bytes] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(fetched) < expected and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.2):
                assert message.error() is None, message.error()
                fetched[(message.partition(), message.offset())] = message.value()
    finally:
        consumer.close()
    return fetched


def _records(settings):
    return read_record(settings.run_dir, "broker"), read_record(settings.run_dir, "broker-s3")


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_is_alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} outlived SIGKILL"
        time.sleep(0.02)


def _our_processes(settings, broker_address: str) -> list[str]:
    """Live processes of this data dir's S3 server (its objects folder is on its command line)
    or of its broker (by listener address)."""
    marks = (str(settings.data_dir), f"tcp://{broker_address}")
    commands = (process_cmdline(e.pid) for e in process_table() if e.state != "Z")
    return [command for command in commands if any(mark in command for mark in marks)]


def test_acknowledged_records_survive_sigkill_with_the_same_offsets_and_cluster_id(settings):
    try:
        up = lifecycle.services_up(settings)
        assert [(s.name, s.healthy) for s in up][:2] == [("broker-s3", True), ("broker", True)]
        assert up[1].new_log and "a new log" in up[1].detail
        broker, s3 = _records(settings)
        first_id = cluster_id({"bootstrap.servers": broker.address})
        assert first_id and first_id.startswith("pinpipe-")
        acked = _produce(broker.address, [f"first-{i}".encode() for i in range(300)])

        _kill(broker.pid)  # the broker alone: its S3 server keeps running
        again = lifecycle.services_up(settings)
        assert again[0].detail.startswith("already running")  # the S3 server
        assert again[1].detail.startswith("started")  # a new broker on the same log
        assert not again[1].new_log and "its log kept" in again[1].detail
        broker, _ = _records(settings)
        assert cluster_id({"bootstrap.servers": broker.address}) == first_id
        assert _fetch_all(broker.address, len(acked)) == acked

        acked |= _produce(broker.address, [f"second-{i}".encode() for i in range(300)])
        _kill(broker.pid)
        _kill(s3.pid)  # both: the log is in files, not in either process
        lifecycle.services_up(settings)
        broker, s3 = _records(settings)
        assert cluster_id({"bootstrap.servers": broker.address}) == first_id
        assert _fetch_all(broker.address, len(acked)) == acked
    finally:
        down = lifecycle.services_down(settings)

    assert [(s.name, s.detail.split()[0]) for s in down][:2] == [
        ("broker", "stopped"),
        ("broker-s3", "stopped"),
    ]
    assert not pid_is_alive(broker.pid) and not pid_is_alive(s3.pid)
    assert _records(settings) == (None, None)
    assert _our_processes(settings, broker.address) == []
    status = {s.name: (s.healthy, s.detail.split(";")[0]) for s in lifecycle.services_status(settings)}
    assert status["broker-s3"] == (False, "not running")
    assert status["broker"] == (False, "not running")


def test_memory_storage_starts_a_new_log_with_a_new_cluster_id(traversable_dir):
    ids = []
    for attempt in range(2):
        with EmbeddedBroker(traversable_dir) as broker:
            bootstrap = broker.bootstrap_servers
            ids.append(cluster_id({"bootstrap.servers": bootstrap}))
            if attempt == 0:
                _produce(bootstrap, [b"lost"])
            else:
                assert _fetch_all(bootstrap, 1, timeout=2) == {}  # the first log is gone
    assert ids[0] != ids[1] and all(ids)


def test_an_acknowledgement_waits_for_the_s3_write(settings):
    """Tansu answers a produce request only after the PUT of its batch: with the S3 server
    stopped (SIGSTOP) no acknowledgement comes; it comes once the server runs again."""
    try:
        lifecycle.services_up(settings)
        broker, s3 = _records(settings)
        _produce(broker.address, [b"warm-up"])  # topic metadata and producer id settled
        producer = Producer({"bootstrap.servers": broker.address, "acks": "all", "linger.ms": 0})
        acked = []
        os.kill(s3.pid, signal.SIGSTOP)
        try:
            producer.produce(TOPIC, value=b"held", on_delivery=lambda err, msg: acked.append(err))
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                producer.poll(0.1)
                assert acked == [], "acknowledged while the S3 server could not store it"
        finally:
            os.kill(s3.pid, signal.SIGCONT)
        assert producer.flush(15) == 0 and acked == [None]
    finally:
        lifecycle.services_down(settings)


def test_s3_server_needs_the_data_dirs_key_and_keeps_it_out_of_logs(settings, traversable_dir):
    home = traversable_dir / "s3-home"
    with BrokerS3Server(home, traversable_dir / "logs") as server:
        credentials = load_credentials(home)
        assert oct((home / "credentials.json").stat().st_mode & 0o777) == "0o600"
        assert load_credentials(home) == credentials  # generated once per data dir

        def status(method: str, headers: dict[str, str]) -> int:
            request = urllib.request.Request(
                f"{server.endpoint_url}/tansu", method=method, headers=headers
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return response.status
            except urllib.error.HTTPError as error:
                return error.code

        assert status("GET", {}) == 403
        wrong = "AWS4-HMAC-SHA256 Credential=AKIAOTHER/20260101/us-east-1/s3/aws4_request"
        assert status("GET", {"Authorization": wrong}) == 403
        preflight = {"Origin": "http://example.test", "Access-Control-Request-Method": "PUT"}
        assert status("OPTIONS", preflight) == 403
        right = f"AWS4-HMAC-SHA256 Credential={credentials.access_key_id}/20260101/us-east-1/s3/aws4_request"
        assert status("GET", {"Authorization": right}) == 200

        secret, key_id = credentials.secret_access_key, credentials.access_key_id
        with EmbeddedBroker(
            traversable_dir / "logs", cluster_id="pinpipe-test", storage=server.storage()
        ) as broker:
            _produce(broker.bootstrap_servers, [b"x"])
            commands = process_cmdline(broker.pid) + process_cmdline(server.pid)
        assert secret not in commands and key_id not in commands
        assert secret not in repr(credentials)
    for log in (traversable_dir / "logs").iterdir():
        text = log.read_text(errors="replace")
        assert secret not in text and key_id not in text, log.name
    assert json.loads((home / "credentials.json").read_text())["secret_access_key"] == secret


def test_s3_server_honours_if_match_as_tansu_relies_on_it(traversable_dir):
    """Tansu reserves offsets by a conditional update of watermark.json: a stale ETag must fail
    (412), or two produce requests in flight get the same offsets."""
    home = traversable_dir / "s3-home"
    with BrokerS3Server(home, traversable_dir / "logs") as server:
        key_id = load_credentials(home).access_key_id
        auth = {"Authorization": f"AWS4-HMAC-SHA256 Credential={key_id}/20260101/us-east-1/s3/aws4_request"}

        def put(body: bytes, **conditions: str) -> tuple[int, str]:
            headers = {**auth, **{name.replace("_", "-"): v for name, v in conditions.items()}}
            request = urllib.request.Request(
                f"{server.endpoint_url}/tansu/w.json", data=body, method="PUT", headers=headers
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return response.status, response.headers["ETag"]
            except urllib.error.HTTPError as error:
                return error.code, ""

        status, first = put(b"0", If_None_Match="*")
        assert status == 200
        assert put(b"0", If_None_Match="*")[0] == 412  # exists already
        status, second = put(b"1", If_Match=first)
        assert status == 200 and second != first
        assert put(b"2", If_Match=first)[0] == 412  # stale: someone else updated it
        assert put(b"2", If_Match=second)[0] == 200
        assert (server.objects_dir / "tansu" / "w.json").read_bytes() == b"2"


def test_s3_listing_of_one_folder_pages_like_s3(traversable_dir):
    """The listing walks only the prefix's folder; keys, order, pages and markers are S3's."""
    import re

    home = traversable_dir / "s3-home"
    with BrokerS3Server(home, traversable_dir / "logs") as server:
        key_id = load_credentials(home).access_key_id
        auth = {"Authorization": f"AWS4-HMAC-SHA256 Credential={key_id}/20260101/us-east-1/s3/aws4_request"}
        keys = ["a/p/0/r/01", "a/p/0/r/02", "a/p/0/r/03", "a/p/0/w.json", "a/p/1/r/01", "b/x"]
        for key in keys:
            request = urllib.request.Request(
                f"{server.endpoint_url}/tansu/{key}", data=b"x", method="PUT", headers=auth
            )
            urllib.request.urlopen(request, timeout=5).close()

        def listing(query: str) -> tuple[list[str], str | None]:
            request = urllib.request.Request(
                f"{server.endpoint_url}/tansu?list-type=2&{query}", headers=auth
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                body = response.read().decode()
            token = re.search(r"<NextContinuationToken>([^<]+)<", body)
            return re.findall(r"<Key>([^<]+)</Key>", body), token and token.group(1)

        first, token = listing("prefix=a/p/0/r/&max-keys=2")
        assert (first, token is not None) == (["a/p/0/r/01", "a/p/0/r/02"], True)
        assert listing(f"prefix=a/p/0/r/&max-keys=2&continuation-token={token}") == (
            ["a/p/0/r/03"], None,
        )  # fmt: skip
        assert listing("prefix=a/p/0/")[0] == ["a/p/0/r/01", "a/p/0/r/02", "a/p/0/r/03", "a/p/0/w.json"]
        assert listing("prefix=a/p/0/r/0&start-after=a/p/0/r/01")[0] == ["a/p/0/r/02", "a/p/0/r/03"]
        assert listing("prefix=a/p/0/r/&start-after=a/p/0/r/03")[0] == []
        assert listing("prefix=a/p/0/r/&start-after=a/")[0] == ["a/p/0/r/01", "a/p/0/r/02", "a/p/0/r/03"]
        assert listing("prefix=a/p/9/")[0] == []
        request = urllib.request.Request(
            f"{server.endpoint_url}/tansu?list-type=2&prefix=a/p/&delimiter=/", headers=auth
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            common = re.findall(r"<Prefix>([^<]+)</Prefix>", response.read().decode())
        assert common == ["a/p/", "a/p/0/", "a/p/1/"]  # the query's own prefix first
        assert listing("prefix=")[0] == keys
