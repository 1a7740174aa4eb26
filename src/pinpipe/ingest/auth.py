"""API-key authentication of the ingest routes, and the bind-address safety check.

Keys are configured only as sha256 hex digests (``ingest.api_key_hashes``); a client presents
the key itself in ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. Digests are compared
in constant time against every configured digest. Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from fastapi import Request

from pinpipe.config import Settings
from pinpipe.ingest.errors import UNAUTHORIZED, IngestError


def hash_api_key(key: str) -> str:
    """The digest to put in ``ingest.api_key_hashes`` for ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


def presented_key(request: Request) -> str | None:
    """The key a request carries, if any."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def key_is_valid(key: str, hashes: tuple[str, ...]) -> bool:
    digest = hash_api_key(key)
    valid = False
    for expected in hashes:  # no early exit: time does not depend on which key matched
        valid |= hmac.compare_digest(digest, expected)
    return valid


async def require_api_key(request: Request) -> None:
    """Dependency of every ingest route: 401 unless a configured key is presented.

    Does nothing when no keys are configured.
    """
    hashes: tuple[str, ...] = request.app.state.api_key_hashes
    if not hashes:
        return
    key = presented_key(request)
    challenge = {"WWW-Authenticate": 'Bearer realm="pinpipe"'}
    if key is None:
        raise IngestError(
            401, UNAUTHORIZED, "Missing API key (X-API-Key or Authorization: Bearer).", challenge
        )
    if not key_is_valid(key, hashes):
        raise IngestError(401, UNAUTHORIZED, "Invalid API key.", challenge)


class BindRefused(ValueError):
    """Binding a non-loopback address without API keys; retrying will not help."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: assume it is reachable from outside


def check_bind_allowed(settings: Settings) -> None:
    """Refuse to serve on a non-loopback address with no API keys unless ``insecure``."""
    ingest = settings.ingest
    if is_loopback(ingest.host) or ingest.api_key_hashes or ingest.insecure:
        return
    raise BindRefused(
        f"refusing to listen on {ingest.host}: no API keys are configured, so anyone who can "
        "reach this address could write to the pipeline. Configure ingest.api_key_hashes "
        "(sha256 hex of each key), bind 127.0.0.1, or pass --insecure."
    )
