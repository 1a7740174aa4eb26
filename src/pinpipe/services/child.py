"""What every embedded service started as a child process shares: stop, liveness, ``with``."""

from __future__ import annotations

import subprocess
from types import TracebackType
from typing import Self

from pinpipe.processes import pid_is_alive, terminate_pid


class ChildService:
    """A service run as one child process. Subclasses set ``_process`` and ``pid`` in
    ``start()``; ``with`` starts on enter and stops on exit."""

    pid: int | None = None
    _process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Safe to call more than once."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            terminate_pid(process.pid, timeout)
        process.wait(timeout=5)  # reap; returns at once after terminate_pid
        self.pid = None

    def is_running(self) -> bool:
        return self._process is not None and pid_is_alive(self._process.pid)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
