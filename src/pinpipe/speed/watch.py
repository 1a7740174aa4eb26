"""The source's watch over its broker, on the driver: outages waited for, restarted logs reported.

:class:`BrokerWatch` keeps what :class:`~pinpipe.speed.source.KafkaStreamReader` needs to know
across triggers (since when the broker does not answer, each partition's end as last seen) and
says what happened: WARNING log lines, and the source's journal (:mod:`pinpipe.speed.journal`)
that the job turns into metrics. Plain values only: the reader holding it is pickled to Spark's
Python workers.
"""

from __future__ import annotations

import logging
import time

from pinpipe.speed.journal import LostRange, SourceJournal, describe, lost_ranges
from pinpipe.speed.offsets import BrokerUnavailable, OffsetMap
from pinpipe.speed.reader import KafkaSourceError

log = logging.getLogger("pinpipe.speed.source")

WAIT_LOG_EVERY_S = 30.0


class BrokerWatch:
    """Outages and log restarts of one source (see the module docstring).

    ``broker_wait_s``: how long an unanswered broker is waited for before the query fails
    (0: for good). ``journal_dir``: the source's journal, or None to keep none.
    """

    def __init__(self, broker_wait_s: float, journal_dir: str | None) -> None:
        self.broker_wait_s = broker_wait_s
        self.journal_dir = journal_dir
        self.unreachable_since: float | None = None
        self._last_wait_log = 0.0
        self._seen: tuple[str | None, OffsetMap] | None = None  # (cluster, ends) as last seen

    def journal(self) -> SourceJournal | None:
        return SourceJournal(self.journal_dir) if self.journal_dir else None

    # --- reachability ------------------------------------------------------------------

    def answered(self) -> None:
        if self.unreachable_since is not None:
            log.warning("the broker answers again after %.0f s", time.time() - self.unreachable_since)
            self.unreachable_since = None

    def unavailable(self, error: BrokerUnavailable) -> None:
        """Wait (the caller plans nothing), log every so often, fail after ``broker_wait_s``."""
        now = time.time()
        first = self.unreachable_since is None
        if first:
            self.unreachable_since = now
        waited = now - self.unreachable_since
        if self.broker_wait_s and waited > self.broker_wait_s:
            raise KafkaSourceError(
                f"the broker did not answer for {waited:.0f} s (speed.broker_wait_s = "
                f"{self.broker_wait_s:.0f}): {error}"
            )
        if first or now - self._last_wait_log >= WAIT_LOG_EVERY_S:
            self._last_wait_log = now
            bound = f"up to {self.broker_wait_s:.0f} s" if self.broker_wait_s else "for as long as it takes"
            log.warning("broker unreachable for %.0f s (%s); waiting %s", waited, error, bound)
        journal = self.journal()
        if journal is not None:
            state = journal.state()
            state.update(unreachable_since=self.unreachable_since, error=str(error))
            journal.write_state(**state)

    # --- the log -----------------------------------------------------------------------

    def seen(self) -> tuple[str | None, OffsetMap]:
        """The cluster and partition ends as last seen, by this source or (after a restart of
        the job) an earlier one, from the journal."""
        if self._seen is None:
            journal = self.journal()
            state = journal.state() if journal is not None else {}
            self._seen = (state.get("cluster"), state.get("seen") or {})
        return self._seen

    def planned(self, cluster: str | None, ends: OffsetMap, *, idle: bool) -> None:
        """A trigger probed ``ends`` on ``cluster``; ``idle``: it found nothing new to read."""
        old_cluster, seen = self.seen()
        merged = {t: dict(parts) for t, parts in seen.items()} if old_cluster == cluster else {}
        for topic, parts in ends.items():
            merged.setdefault(topic, {}).update(parts)
        self._seen = (cluster, merged)
        journal = self.journal()
        if journal is not None:
            journal.write_state(at=time.time(), idle=idle, cluster=cluster, seen=merged, unreachable_since=None)

    def log_restarted(
        self, processed: OffsetMap, keys: set[tuple[str, int]], old_cluster: str | None,
        cluster: str | None, reason: str,
    ) -> list[LostRange]:  # fmt: skip
        """The log of ``keys`` restarted: report what of it was not processed."""
        seen_cluster, seen = self.seen()
        lost = lost_ranges(processed, seen if seen_cluster == old_cluster else None, keys)
        log.warning(
            "log restarted (%s): reading from the new log's start; records lost for the speed layer "
            "(not processed before the restart): %s", reason, describe(lost),
        )  # fmt: skip
        journal = self.journal()
        if journal is not None:
            journal.append_event("log_restart", lost, old_cluster=old_cluster, new_cluster=cluster, reason=reason)
        self._seen = (cluster, {})
        return lost

    def planned_range_lost(self, lost: list[LostRange], old_cluster: str, cluster: str | None) -> None:
        """A batch planned on ``old_cluster``'s log is replayed on another log: it reads nothing."""
        log.warning(
            "log restarted before a planned batch ran (cluster %s is now %s): records lost for the "
            "speed layer: %s", old_cluster, cluster, describe(lost),
        )  # fmt: skip
        journal = self.journal()
        if journal is not None:
            journal.append_event("range_lost", lost, old_cluster=old_cluster, new_cluster=cluster)
