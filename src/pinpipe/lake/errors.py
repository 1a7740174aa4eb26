"""Errors of the lake sink; each says whether retrying can help."""

from __future__ import annotations


class LakeError(RuntimeError):
    """Base error of the lake. ``retriable`` says whether trying again may help."""

    retriable = False


class StorageError(LakeError):
    """Writing or listing the lake failed."""

    def __init__(self, message: str, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


class SinkStopped(LakeError):
    """The sink stopped on a terminal error; nothing after the last durable file was committed."""
