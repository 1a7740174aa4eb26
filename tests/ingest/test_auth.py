"""API keys: off by default; when configured, every ingest route needs one, health does not."""

from __future__ import annotations

import pytest

from pinpipe.config import Settings
from pinpipe.ingest.auth import BindRefused, check_bind_allowed, hash_api_key
from tests.ingest.rows import GEO

KEY = "s3cret-key-for-tests"
KEY_SHA256 = "163c20da406bac8ff173dcf82d2c083d7d255c34ee5d069ffb0b4408eb7b796d"


def test_hash_api_key_is_sha256_hex():
    assert hash_api_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.integration
def test_no_keys_configured_means_open(api):
    assert api.client.post("/geo/", json=GEO).status_code == 200


@pytest.mark.integration
def test_keys_configured(api_factory):
    api = api_factory(api_key_hashes=[hash_api_key("other"), hash_api_key(KEY)])
    response = api.client.post("/geo/", json=GEO)
    assert response.status_code == 401
    assert response.json() == {
        "error_code": 40101,
        "message": "Missing API key (X-API-Key or Authorization: Bearer).",
    }
    assert response.headers["www-authenticate"] == 'Bearer realm="pinpipe"'
    response = api.client.post("/geo/", json=GEO, headers={"X-API-Key": "wrong"})
    assert (response.status_code, response.json()["message"]) == (401, "Invalid API key.")
    assert api.client.post("/geo/", json=GEO, headers={"X-API-Key": KEY}).status_code == 200
    assert (
        api.client.post("/geo/", json=GEO, headers={"Authorization": f"Bearer {KEY}"}).status_code
        == 200
    )
    assert api.client.post("/geo/", json=GEO, headers={"X-API-Key": "other"}).status_code == 200
    # Every ingest route, before the body is even looked at.
    for method, path in (
        ("GET", "/topics"),
        ("POST", "/topics/u.pin"),
        ("PUT", "/streams/s-pin/record"),
        ("PUT", "/streams/s-pin/records"),
        ("POST", "/v1/events"),
        ("POST", "/user/"),
    ):
        assert api.client.request(method, path, content=b"junk").status_code == 401, path
    # Probes and scrapers need no key.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert api.client.get(path).status_code == 200, path


@pytest.mark.parametrize(
    ("ingest", "allowed"),
    [
        ({"host": "127.0.0.1"}, True),
        ({"host": "localhost"}, True),
        ({"host": "::1"}, True),
        ({"host": "0.0.0.0"}, False),
        ({"host": "0.0.0.0", "insecure": True}, True),
        ({"host": "0.0.0.0", "api_key_hashes": [KEY_SHA256]}, True),
        ({"host": "api.example.com"}, False),
    ],
)
def test_check_bind_allowed(ingest, allowed):
    settings = Settings(ingest=ingest)
    if allowed:
        check_bind_allowed(settings)
    else:
        with pytest.raises(BindRefused, match="refusing to listen on"):
            check_bind_allowed(settings)


def test_key_hashes_must_be_sha256_hex():
    with pytest.raises(ValueError, match="sha256 hex"):
        Settings(ingest={"api_key_hashes": [KEY]})


def test_the_documented_hash_of_the_test_key():
    assert hash_api_key(KEY) == KEY_SHA256
