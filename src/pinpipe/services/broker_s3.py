"""The local S3 server that keeps the embedded broker's log on disk (``broker.storage = s3``).

Tansu stores a durable log only in S3, so pinpipe runs a small S3 server of its own: the
``localbucket`` package (standard library only), which keeps every object as a plain file under
``<data_dir>/broker-s3/objects/<bucket>/``. Beside that folder live the files that must outlive
every process: ``credentials.json`` (generated once per data dir, mode 0600, passed to the
server and to Tansu through their environment, never on a command line or in a log) and
``cluster-id`` (Tansu keeps its objects under ``clusters/<id>/``, and clients tell a restarted
empty log from a reconnection by a changed id: a durable log must keep its id).

Two things localbucket does not do are added by :func:`_guarded_handler`'s subclass:

- **conditional updates** (``PUT`` with ``If-Match: <etag>``). Tansu reserves offsets by
  updating ``watermark.json`` (and ``meta.json``) only if it is unchanged since it read it;
  localbucket ignores ``If-Match``, so two produce requests in flight for one partition (an
  idempotent producer keeps up to five) were given the same offsets and the second batch's
  ``PUT ... If-None-Match: *`` failed (Tansu logged ``AlreadyExists``, the producer's queue
  filled). Such a write is now checked and done under one lock, 412 when the ETag differs.
- **listing one folder**: localbucket answers every ListObjectsV2 page by walking and sorting
  the whole bucket, and Tansu lists a partition's ``records/`` on every fetch, so each fetch
  cost grew with every batch of every topic, once per page of 1,000 keys. A listing now walks
  only the folder its prefix names (same keys, same order, same pages).
- **access control**: localbucket checks no credentials and allows any web origin (CORS), so
  any local process or any page open in a browser could read or delete the log. Requests not
  signed with this data dir's access key id get 403, and CORS preflights too. The signature
  itself is not verified: on loopback the key id, kept as secret as the secret key, is what a
  client must know.

Durability: localbucket writes an object to a temporary file and renames it, without fsync;
an object survives the death of the broker or of this server, not of the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pinpipe.services.child import ChildService
from pinpipe.services.errors import ServiceError

HOST = "127.0.0.1"
BUCKET = "tansu"
LOG_NAME = "broker-s3.log"
# The server's process is found again by its module name and port (guards against pid reuse).
MODULE = "pinpipe.services.broker_s3"
_KEY_ENV = "PINPIPE_BROKER_S3_ACCESS_KEY_ID"


class BrokerS3Error(ServiceError):
    """The broker's S3 server did not start or did not answer; the message carries the log tail."""


@dataclass(frozen=True)
class S3Credentials:
    """The access key pair of one data dir's S3 server (never print :attr:`secret_access_key`)."""

    access_key_id: str
    secret_access_key: str

    def __repr__(self) -> str:  # a traceback or a debug print must not show the secret
        return f"S3Credentials(access_key_id={self.access_key_id[:4]}..., secret_access_key=***)"


def load_credentials(home: Path) -> S3Credentials:
    """``<home>/credentials.json``, generated (mode 0600) the first time it is asked for."""
    path = Path(home) / "credentials.json"
    try:
        return S3Credentials(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    credentials = S3Credentials(f"PP{secrets.token_hex(9).upper()}", secrets.token_urlsafe(30))
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(credentials.__dict__, out)
    os.replace(tmp, path)
    return credentials


def read_cluster_id(home: Path) -> str | None:
    """The cluster id kept in ``<home>/cluster-id``; None if there is none yet."""
    try:
        return (Path(home) / "cluster-id").read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None


def stored_cluster_id(home: Path, new_id: str) -> str:
    """The cluster id kept in ``<home>/cluster-id``; ``new_id`` is written there if none is.

    A new id means a new, empty log: the caller knows it is new when the answer is ``new_id``.
    """
    stored = read_cluster_id(home)
    if stored is not None:
        return stored
    path = Path(home) / "cluster-id"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(new_id + "\n", encoding="ascii")
    os.replace(tmp, path)
    return new_id


@dataclass(frozen=True)
class S3Storage:
    """Where a Tansu broker keeps its log: a bucket on an S3 endpoint, with its credentials."""

    endpoint_url: str
    credentials: S3Credentials
    bucket: str = BUCKET

    @property
    def engine_url(self) -> str:
        """Tansu's ``--storage-engine`` value."""
        return f"s3://{self.bucket}/"

    def environment(self) -> dict[str, str]:
        """The variables Tansu's S3 client (Rust ``object_store``, ``from_env``) reads."""
        return {
            "AWS_ENDPOINT": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.credentials.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.credentials.secret_access_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",  # plain HTTP, on loopback only
        }


class BrokerS3Server(ChildService):
    """One local S3 server on ``127.0.0.1:<port>`` serving ``<home>/objects``.

    Same shape as :class:`pinpipe.services.broker.EmbeddedBroker`: :meth:`start` (optionally
    detached, in its own session) waits until the server answers an authenticated request;
    :meth:`stop` SIGTERMs it. The bucket is made on disk before the server starts.
    """

    def __init__(self, home: Path, log_dir: Path, port: int = 0) -> None:
        self.home = Path(home)
        self.log_dir = Path(log_dir)
        self.requested_port = port
        self.port: int | None = None
        self.pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def objects_dir(self) -> Path:
        return self.home / "objects"

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise BrokerS3Error("the broker's S3 server has not been started")
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / LOG_NAME

    def storage(self) -> S3Storage:
        """The broker's storage on this server (valid after :meth:`start`)."""
        return S3Storage(self.endpoint_url, load_credentials(self.home))

    def start(self, timeout: float = 15.0, detach: bool = False) -> None:
        """Spawn the server and wait until it answers; a port lost to a race is retried once."""
        from pinpipe.services.broker import free_port

        if self._process is not None and self._process.poll() is None:
            return
        credentials = load_credentials(self.home)
        (self.objects_dir / BUCKET).mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        attempts = 2 if self.requested_port == 0 else 1
        for attempt in range(attempts):
            port = self.requested_port or free_port()
            # -c, not -m: running a module of an imported package as __main__ loads it twice.
            entry = f"from {MODULE} import main; main()"
            command = [sys.executable, "-c", entry, str(self.objects_dir), "--port", str(port)]
            with open(self.log_path, "ab") as log:
                log.write(f"--- starting {' '.join(command)}\n".encode())
                log.flush()
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=detach,
                    env={**os.environ, _KEY_ENV: credentials.access_key_id},
                    close_fds=True,
                )
            self.port, self.pid = port, self._process.pid
            try:
                self._wait_ready(credentials, timeout)
                return
            except BrokerS3Error:
                exited = self._process.poll() is not None
                self.stop()
                if attempt + 1 < attempts and exited:
                    continue  # most likely the port was taken meanwhile
                raise
            except BaseException:  # Ctrl-C: a detached server would outlive us
                self.stop()
                raise

    def _wait_ready(self, credentials: S3Credentials, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while not s3_is_healthy(self.endpoint_url, credentials, timeout=0.5):
            if self._process.poll() is not None:
                raise BrokerS3Error(
                    f"the broker's S3 server exited with code {self._process.returncode}"
                    f"; log tail:\n{self._log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise BrokerS3Error(
                    f"the broker's S3 server on {self.endpoint_url} did not answer within "
                    f"{timeout:.0f} s; log tail:\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _authorization(credentials: S3Credentials) -> str:
    # The shape of a SigV4 header: the server checks only the key id in it (see module doc).
    return f"AWS4-HMAC-SHA256 Credential={credentials.access_key_id}/health/us-east-1/s3/aws4_request"


def s3_is_healthy(endpoint_url: str, credentials: S3Credentials, timeout: float = 2.0) -> bool:
    """True if the server answers HeadBucket on the broker's bucket with 200 in time."""
    request = urllib.request.Request(
        f"{endpoint_url}/{BUCKET}",
        method="HEAD",
        headers={"Authorization": _authorization(credentials)},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _guarded_handler(access_key_id: str) -> type:
    """localbucket's request handler, answering 403 to requests without our access key id."""
    from http import HTTPStatus

    import localbucket

    credential = f"Credential={access_key_id}/"
    conditional_writes = threading.Lock()  # one If-Match check-and-write at a time

    class _GuardedHandler(localbucket.S3Handler):
        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per request would grow without bound; errors still reach stderr

        def _dispatch(self, action):  # noqa: ANN001 - localbucket's own signature
            presigned = f"X-Amz-Credential={access_key_id}%2F" in self.path
            if credential not in self.headers.get("Authorization", "") and not presigned:
                self._send_error(
                    localbucket.S3Error(HTTPStatus.FORBIDDEN, "AccessDenied", "Access Denied")
                )
                return
            super()._dispatch(action)

        def _write_object(self, bucket: str, key: str, write):  # noqa: ANN001, ANN202 - as above
            if_match = self.headers.get("If-Match")
            if if_match is None:
                return super()._write_object(bucket, key, write)
            with conditional_writes:
                target = self._object_path(bucket, key)
                if not target.is_file() or not localbucket.etag_matches(
                    if_match, localbucket.object_etag(target)
                ):
                    raise self._precondition_failed_error()
                return super()._write_object(bucket, key, write)

        def _list_entries(  # noqa: ANN202 - localbucket's own signature
            self, bucket_dir, prefix, delimiter, marker, marker_is_prefix, max_keys  # noqa: ANN001
        ):
            # Keys under "a/b/c" all live in the folder a/b/: list that folder with the prefix and
            # marker made relative to it, and put the folder back in front of what comes back.
            folder = prefix[: prefix.rfind("/") + 1]
            root = Path(bucket_dir, folder)
            if not folder or not root.is_dir():
                if folder:
                    return [], [], False, ""
                return super()._list_entries(
                    bucket_dir, prefix, delimiter, marker, marker_is_prefix, max_keys
                )
            if marker.startswith(folder):
                marker = marker[len(folder):]
            elif marker.encode() > folder.encode():
                return [], [], False, ""  # the marker is past every key of the folder
            else:
                marker, marker_is_prefix = "", False  # before every key of the folder
            contents, prefixes, truncated, last = super()._list_entries(
                root, prefix[len(folder):], delimiter, marker, marker_is_prefix, max_keys
            )
            contents = [(folder + key, path) for key, path in contents]
            prefixes = [folder + common for common in prefixes]
            return contents, prefixes, truncated, last[:2] + folder + last[2:] if last else ""

        def do_OPTIONS(self) -> None:  # no CORS: browsers' pages must not reach the log
            self._send_error(
                localbucket.S3Error(HTTPStatus.FORBIDDEN, "AccessDenied", "CORS is not allowed")
            )

    return _GuardedHandler


def main(argv: list[str] | None = None) -> None:
    """The server process: ``ROOT --port P``, the access key id in the environment."""
    from http.server import ThreadingHTTPServer

    parser = argparse.ArgumentParser(prog=MODULE)
    parser.add_argument("root", type=Path)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    access_key_id = os.environ.pop(_KEY_ENV, "")
    if not access_key_id:
        sys.exit(f"{_KEY_ENV} is not set")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s [%(levelname)s]: %(message)s")
    handler = _guarded_handler(access_key_id)
    handler.data_root = args.root.resolve()
    server = ThreadingHTTPServer((HOST, args.port), handler)
    server.daemon_threads = True  # a hung client must not keep a stopping server alive
    print(f"serving {handler.data_root} on http://{HOST}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
