"""Run-state records of detached services.

``pinpipe up`` starts services that outlive the command; it writes one small JSON file per
service (``<run_dir>/<name>.json``: pid, address, start time) so that later commands can find,
check and stop them. A record whose process is gone is stale and is removed when read.
Records never hold secrets.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from pinpipe.processes import pid_is_alive


@dataclass(frozen=True)
class ServiceRecord:
    """A detached service: its process id and where clients reach it (no secrets)."""

    name: str
    pid: int
    address: str
    started_at: str
    web_ui: str = ""  # a service's web page, when it has one (the Spark master and workers)

    @classmethod
    def now(cls, name: str, pid: int, address: str, web_ui: str = "") -> ServiceRecord:
        """A record stamped with the current UTC time."""
        return cls(name, pid, address, datetime.now(UTC).isoformat(timespec="seconds"), web_ui)


def _record_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / f"{name}.json"


def write_record(run_dir: Path, record: ServiceRecord) -> None:
    """Write ``<run_dir>/<name>.json`` atomically (a reader never sees half a record)."""
    path = _record_path(run_dir, record.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
    document = asdict(record)
    if not document["web_ui"]:  # only the services that have one carry the field
        del document["web_ui"]
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_record(run_dir: Path, name: str) -> ServiceRecord | None:
    """The record of a running service, or None (a stale or unreadable file is removed)."""
    path = _record_path(run_dir, name)
    try:
        record = ServiceRecord(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        path.unlink(missing_ok=True)
        return None
    if not pid_is_alive(record.pid):
        path.unlink(missing_ok=True)
        return None
    return record


def record_names(run_dir: Path, prefix: str) -> list[str]:
    """Names of the records in ``run_dir`` starting with ``prefix`` (stale ones included)."""
    return sorted(path.stem for path in Path(run_dir).glob(f"{prefix}*.json"))


def remove_record(run_dir: Path, name: str) -> None:
    """Forget a service; no error if there is no record."""
    _record_path(run_dir, name).unlink(missing_ok=True)
