"""The one vocabulary of failure every stage shares: may trying again help?

Each error pinpipe raises on purpose derives from :class:`PinpipeError` and says
``transient``: True when the same call may succeed later (a broker or a database away, a
timeout, a full queue), False when it will not (invalid input, a refusal, a bad setting).
Retry loops ask :func:`is_transient`; only the ingest API's edge maps the answer to an HTTP
status (429/503 for transient, 4xx/502 for terminal), as dlt separates transient from terminal
exceptions.
"""

from __future__ import annotations


class PinpipeError(Exception):
    """Base of pinpipe's errors; ``transient`` says whether trying again may help."""

    transient: bool = False

    def __init__(self, message: str = "", *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient


class TransientError(PinpipeError):
    """Trying again may help: the dependency is away or slow, not wrong."""

    transient = True


class TerminalError(PinpipeError):
    """Trying again will not help until something changes (the input, a setting, a refusal)."""

    transient = False


def is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` may help: its ``transient`` flag (errors not of pinpipe: no)."""
    return isinstance(exc, PinpipeError) and exc.transient
