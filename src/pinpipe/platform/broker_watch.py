"""``pinpipe up`` supervises the embedded broker like its other components.

Health means "does its job": the broker answers a metadata request. A broker that does not
answer but whose process lives (paused, overloaded) is reported, never restarted: a stall is
not a crash, and its clients wait for it. A broker whose process died is started again on the
same port, so that every client reconnects by itself. With memory storage the new broker is an
empty log with a new cluster id: the lake sink writes out what it had fetched, detects the new
log and records in the lake what the old one held beyond it (:mod:`pinpipe.lake.logs`); this
module says so in ``up``'s output and reads those losses back for ``status`` and ``down``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pinpipe.config import Settings

CHECK_EVERY_S = 1.0
RETRY_START_AFTER_S = 5.0
LOSSES_EVERY_S = 5.0
"""How often the lake's loss records are read (a listing of the ledger each time: a LIST request
on an S3 lake); a loss the sink records is in up's output within this."""


@dataclass
class BrokerWatch:
    """The embedded broker of one ``up`` run: its pid and port, and how often it was restarted."""

    settings: Settings
    pid: int
    port: int
    event: Callable[[str, str], None]
    restarts: int = 0
    next_check: float = 0.0
    next_losses: float = 0.0
    reported_losses: set = field(default_factory=set)

    def tick(self) -> int | None:
        """Check (at most every ``CHECK_EVERY_S``); restart a dead broker. Returns the new pid
        when it was restarted, else None."""
        from pinpipe.processes import pid_is_alive
        from pinpipe.services.errors import ServiceError
        from pinpipe.services.lifecycle import restart_embedded_broker
        from pinpipe.services.state import read_record

        now = time.monotonic()
        if now < self.next_check:
            return None
        self.next_check = now + CHECK_EVERY_S
        if now >= self.next_losses:
            self.next_losses = now + LOSSES_EVERY_S
            self._report_new_losses()
        if pid_is_alive(self.pid):
            return None
        with contextlib.suppress(ChildProcessError, OSError):
            _, status = os.waitpid(self.pid, os.WNOHANG)  # reap it: started by this process
        self.event("broker", f"exited (pid {self.pid}); starting it again on port {self.port}",
                   failure=True)
        try:
            status = restart_embedded_broker(self.settings, self.port)
        except ServiceError as error:
            self.event("broker", f"could not be started again ({str(error).splitlines()[0]}); "
                       f"retrying in {RETRY_START_AFTER_S:.0f} s", failure=True)  # fmt: skip
            self.next_check = now + RETRY_START_AFTER_S
            return None
        record = read_record(self.settings.run_dir, "broker")
        self.pid = record.pid if record else self.pid
        self.restarts += 1
        if "memory storage" in status.detail:
            self.event("broker", f"{status.detail}: an empty log; what the old one held beyond "
                       "the lake is reported by the lake sink and `pinpipe lake verify`", failure=True)  # fmt: skip
        else:
            self.event("broker", status.detail)
        return self.pid

    def _report_new_losses(self) -> None:
        for lost in lost_records(self.settings):
            key = (lost.cluster_id, lost.topic, lost.partition)
            if key not in self.reported_losses:
                self.reported_losses.add(key)
                self.event("lake-sink", f"LOST {lost.records:,} acknowledged records with the broker's "
                           f"log {lost.generation}: {lost.describe()}", failure=True)  # fmt: skip


def lost_records(settings: Settings) -> list:
    """Every :class:`~pinpipe.lake.logs.LostRange` recorded in the lake ([] if unreadable)."""
    from pinpipe.lake.errors import StorageError
    from pinpipe.lake.logs import LogLedger
    from pinpipe.lake.storage import LakeStorage

    try:
        return LogLedger(LakeStorage.from_settings(settings)).losses()
    except (StorageError, OSError):
        return []
