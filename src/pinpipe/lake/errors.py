"""Errors of the lake sink; each says whether retrying can help (:mod:`pinpipe.errors`)."""

from __future__ import annotations

from pinpipe.errors import PinpipeError


class LakeError(PinpipeError):
    """Base error of the lake."""


class StorageError(LakeError):
    """Writing or listing the lake failed (``transient`` given by the caller, who knows why)."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message, transient=transient)


class SinkStopped(LakeError):
    """The sink stopped on a terminal error; nothing after the last durable file was committed."""
