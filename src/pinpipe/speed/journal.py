"""What the stream's source tells the job about the broker: log restarts, losses, reachability.

Spark runs a Python data source's planning in a Python process of its own, not in the job's
process, so the source cannot update the job's Prometheus metrics. It writes to a directory
inside the checkpoint instead (``<checkpoint>/pinpipe-source/``, the ``pinpipe.stateDir``
option), which the job reads at every turn of its loop (:mod:`pinpipe.speed.prom`):

- ``state.json``, replaced at every trigger: when the broker last answered (``at``), whether
  that trigger found nothing new to read (``idle``), the cluster id, the end of every
  partition as last seen (``seen``: kept across restarts of the job, so the loss after a crash
  still knows how far the old log went) and since when the broker is unreachable;
- ``events.jsonl``, appended: one line per restarted log (``"kind": "log_restart"``) or planned
  range found gone (``"range_lost"``), with the ``lost`` ranges ``[first, end)`` per
  (topic, partition); ``end`` is null when the old log's end was never seen.

The files travel with the checkpoint (``pinpipe up`` archives both together), so the counts
the job exports are totals over the checkpoint's life, not over one process.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STATE = "state.json"
EVENTS = "events.jsonl"
DIRECTORY = "pinpipe-source"
"""The journal's directory inside the checkpoint."""


@dataclass(frozen=True)
class LostRange:
    """Records ``[first, end)`` of an old log the stream had not processed (``end``: None if unknown)."""

    topic: str
    partition: int
    first: int
    end: int | None

    @property
    def records(self) -> int:
        return 0 if self.end is None else max(self.end - self.first, 0)

    def describe(self) -> str:
        where = f"{self.topic}[{self.partition}]"
        if self.end is None:
            return f"{where} from offset {self.first} (the old log's end was not seen)"
        if self.records == 1:
            return f"{where} offset {self.first} (1 record)"
        if self.records:
            return f"{where} offsets {self.first}-{self.end - 1} ({self.records} records)"
        return f"{where} none (processed up to {self.first})"


def lost_ranges(
    processed: dict[str, dict[str, int]], seen: dict[str, dict[str, int]] | None, keys: set[tuple[str, int]]
) -> list[LostRange]:
    """Per partition of ``keys`` with a ``processed`` offset: ``[processed, seen)``."""
    ranges = []
    for topic, part in sorted(keys):
        first = processed.get(topic, {}).get(str(part))
        if first is None:
            continue
        end = (seen or {}).get(topic, {}).get(str(part))
        ranges.append(LostRange(topic, part, first, None if end is None else max(end, first)))
    return ranges


def describe(ranges: list[LostRange]) -> str:
    """The ranges with records lost (or an unknown end), then how many partitions lost none."""
    told = [r.describe() for r in ranges if r.records or r.end is None]
    if len(told) < len(ranges):
        told.append(f"none in {len(ranges) - len(told)} other partition(s)")
    return "; ".join(told) or "no partition had been read"


class SourceJournal:
    """The files of one checkpoint's source journal (see the module docstring)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(str(directory).removeprefix("file://").removeprefix("file:"))

    def write_state(self, **state: Any) -> None:
        """Replace ``state.json`` (atomically: the job may read it at any moment)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            partial = self.directory / f".{STATE}.{os.getpid()}"
            partial.write_text(json.dumps(state), encoding="utf-8")
            os.replace(partial, self.directory / STATE)
        except OSError:  # the journal reports; it must never stop the stream
            logging.getLogger(__name__).debug("source state not written", exc_info=True)

    def state(self) -> dict[str, Any]:
        try:
            loaded = json.loads((self.directory / STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def append_event(self, kind: str, lost: list[LostRange], **fields: Any) -> None:
        line = json.dumps({"at": time.time(), "kind": kind, **fields, "lost": [asdict(r) for r in lost]})
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(self.directory / EVENTS, "a", encoding="utf-8") as events:
                events.write(line + "\n")
        except OSError:
            logging.getLogger(__name__).debug("source event not written", exc_info=True)

    def events(self, position: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The complete event lines from byte ``position`` on, and the position after them."""
        try:
            with open(self.directory / EVENTS, "rb") as events:
                events.seek(position)
                data = events.read()
        except OSError:
            return [], position
        complete = data[: data.rfind(b"\n") + 1]
        parsed = []
        for line in complete.splitlines():
            try:
                parsed.append(json.loads(line))
            except ValueError:
                continue
        return parsed, position + len(complete)


def ensure_log_handler() -> None:
    """Give pinpipe's loggers a stderr handler in a process nobody configured logging in.

    The source runs in Python processes Spark starts; their stderr reaches the job's log, but
    without a handler Python would print WARNING lines bare (and drop INFO ones).
    """
    root = logging.getLogger()
    package = logging.getLogger("pinpipe")
    if root.handlers or package.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    package.addHandler(handler)
    package.setLevel(logging.INFO)
