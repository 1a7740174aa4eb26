"""Bounds on what a request may carry before any route sees it.

uvicorn's httptools parser has no limit of its own on the header block (a 100 KB header was
accepted); this middleware answers 431 with the proxy-style error body when the header names
and values of a request add up to more than ``ingest.max_header_bytes``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from pinpipe.ingest.errors import HEADERS_TOO_LARGE, error_body


class HeaderLimitMiddleware:
    """Pure ASGI middleware: 431 for a header block larger than ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) for name, value in scope["headers"])
            if size > self.max_bytes:
                body = error_body(
                    HEADERS_TOO_LARGE,
                    f"Request headers too large: {size:,} bytes (limit {self.max_bytes:,}).",
                )
                await send({"type": "http.response.start", "status": 431, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
