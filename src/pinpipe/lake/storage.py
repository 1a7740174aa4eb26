"""*Where* the lake lives: a local directory or an S3-compatible bucket, via pyarrow.fs.

Writes are all-or-nothing, so a reader never sees a partial file:

- local: the bytes go to a temporary file named ``.<name>.<random>.tmp`` in the target
  directory, are fsynced, then ``os.replace``-d onto the final name (atomic on POSIX; an
  existing file of that name is replaced), and the directory is fsynced;
- S3: the whole file is uploaded as one object; S3 makes an object visible only when its PUT
  (or multipart upload) completes, and a new PUT replaces the old object whole.

Errors are classified: permission, missing bucket, bad credentials and similar are terminal;
everything else (timeouts, connection resets, 5xx, throttling) is transient.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pinpipe.config import Settings
from pinpipe.lake.errors import StorageError

_TERMINAL_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}
_TERMINAL_S3 = (
    "NO_SUCH_BUCKET",
    "NoSuchBucket",
    "ACCESS_DENIED",
    "AccessDenied",
    "InvalidAccessKeyId",
    "INVALID_ACCESS_KEY_ID",
    "SignatureDoesNotMatch",
    "SIGNATURE_DOES_NOT_MATCH",
    "HTTP response code: 403",
    "HTTP response code: 400",
    "HTTP response code: 404",
)


def lake_root(settings: Settings) -> str:
    """``settings.lake.root`` if set, else ``<data_dir>/lake``."""
    return settings.lake.root or str(settings.data_dir / "lake")


def delta_storage_options(settings: Settings) -> dict[str, str] | None:
    """The lake for delta-rs (the stream's Delta tables): its storage options for an ``s3://``
    root, from the same ``lake.*`` settings as :meth:`LakeStorage.from_settings`; None when local.

    A commit's put-if-absent is S3's conditional write (``If-None-Match``, honoured by AWS S3,
    MinIO and moto): two writers cannot both create one log version, and no DynamoDB is needed.
    """
    if not lake_root(settings).startswith("s3://"):
        return None
    lake = settings.lake
    options = {"conditional_put": "etag"}
    if lake.s3_endpoint_url:
        options["AWS_ENDPOINT_URL"] = lake.s3_endpoint_url
        if lake.s3_endpoint_url.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    if lake.s3_region:
        options["AWS_REGION"] = lake.s3_region
    if lake.s3_access_key_id and lake.s3_secret_access_key:
        options["AWS_ACCESS_KEY_ID"] = lake.s3_access_key_id
        options["AWS_SECRET_ACCESS_KEY"] = lake.s3_secret_access_key.get_secret_value()
    return options


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the lake root, "/"-separated
    size: int


class LakeStorage:
    """The lake root on one filesystem; every path argument is relative to the root."""

    def __init__(self, filesystem: pafs.FileSystem, base: str, *, local: bool, display: str):
        self.filesystem = filesystem
        self.base = base.rstrip("/")
        self.local = local
        self.display = display

    @classmethod
    def from_settings(cls, settings: Settings) -> LakeStorage:
        root = lake_root(settings)
        if not root.startswith("s3://"):
            path = Path(root).expanduser().resolve()
            return cls(pafs.LocalFileSystem(), str(path), local=True, display=str(path))
        lake = settings.lake
        parsed = urlparse(root)
        options: dict = {}
        if lake.s3_endpoint_url:
            endpoint = urlparse(lake.s3_endpoint_url)
            options["endpoint_override"] = endpoint.netloc or endpoint.path
            options["scheme"] = endpoint.scheme or "https"
        if lake.s3_region:
            options["region"] = lake.s3_region
        if lake.s3_access_key_id and lake.s3_secret_access_key:
            options["access_key"] = lake.s3_access_key_id
            options["secret_key"] = lake.s3_secret_access_key.get_secret_value()
        options["connect_timeout"] = 5
        options["request_timeout"] = 30
        try:  # small objects as one PutObject instead of a multipart upload (pyarrow >= 15)
            filesystem = pafs.S3FileSystem(allow_delayed_open=True, **options)
        except TypeError:
            filesystem = pafs.S3FileSystem(**options)
        base = f"{parsed.netloc}{parsed.path}".rstrip("/")
        return cls(filesystem, base, local=False, display=root)

    def full_path(self, path: str) -> str:
        return f"{self.base}/{path}"

    def write_atomic(self, path: str, data: bytes | memoryview | pa.Buffer) -> bool | None:
        """Make ``path`` hold exactly ``data``, all at once; replaces an existing file.

        Returns whether a file was replaced (local only; None on S3, where asking costs a
        request per file).
        """
        try:
            if self.local:
                return self._write_local(Path(self.full_path(path)), data)
            with self.filesystem.open_output_stream(self.full_path(path)) as stream:
                stream.write(data)
            return None
        except OSError as exc:
            raise classify(exc, f"writing {self.display}/{path}") from exc

    @staticmethod
    def _write_local(target: Path, data) -> bool:
        target.parent.mkdir(parents=True, exist_ok=True)
        replaced = target.exists()
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)
        return replaced

    def list_files(self, under: str = "") -> Iterator[StoredFile]:
        """Every file below ``under`` (relative paths), temporary ones included."""
        selector = pafs.FileSelector(
            self.full_path(under).rstrip("/"), recursive=True, allow_not_found=True
        )
        try:
            infos = self.filesystem.get_file_info(selector)
        except OSError as exc:
            raise classify(exc, f"listing {self.display}/{under}") from exc
        prefix = len(self.base) + 1
        for info in infos:
            if info.type == pafs.FileType.File:
                yield StoredFile(info.path[prefix:], info.size or 0)

    def read_bytes(self, path: str) -> bytes:
        """The whole file (small files: the ledger of :mod:`pinpipe.lake.logs`).
        Raises FileNotFoundError when there is none."""
        try:
            with self.filesystem.open_input_stream(self.full_path(path)) as handle:
                return handle.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise classify(exc, f"reading {self.display}/{path}") from exc

    def read_metadata(self, path: str) -> pq.FileMetaData:
        try:
            with self.filesystem.open_input_file(self.full_path(path)) as handle:
                return pq.read_metadata(handle)
        except OSError as exc:
            raise classify(exc, f"reading {self.display}/{path}") from exc

    def read_columns(self, path: str, columns: list[str]):
        try:
            with self.filesystem.open_input_file(self.full_path(path)) as handle:
                return pq.read_table(handle, columns=columns)
        except OSError as exc:
            raise classify(exc, f"reading {self.display}/{path}") from exc


def classify(exc: OSError, doing: str) -> StorageError:
    """A :class:`StorageError` saying whether retrying ``doing`` may help."""
    text = str(exc)
    terminal = (
        isinstance(exc, (PermissionError, NotADirectoryError, IsADirectoryError))
        or exc.errno in _TERMINAL_ERRNOS
        or any(marker in text for marker in _TERMINAL_S3)
    )
    return StorageError(f"{doing} failed: {text}", transient=not terminal)
