"""The OpenAPI document describes the API as it is: schemathesis' checks against the real API
on the session's broker (``schemathesis run --checks all`` would report the same).

:func:`test_generated_requests_pass_every_check` runs every response check (status codes,
media types, response schemas and headers, schema-valid input accepted, schema-violating input
rejected) on generated requests; :func:`test_a_405_allows_every_documented_method` does what
schemathesis' ``unsupported_method`` and ``allow_header_conformance`` do, for every path.

Four answers break "a schema-valid request is accepted" on purpose: each is excused in
:func:`explained_rejection` only in its exact shape, and shown by a test of its own whose
docstring says why it is right.
"""

from __future__ import annotations

from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.ingest.conftest import Api, make_settings, running_api
from tests.ingest.rows import GEO, PIN

pytestmark = pytest.mark.integration

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")


@pytest.fixture(scope="module")
def small_api(kafka_bootstrap: str):
    """An API whose batches are small, so generated batches stay quick."""
    with running_api(make_settings(kafka_bootstrap, max_records_per_request=20)) as api:
        yield api


def _has_integral_float(value: Any) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, dict):
        return any(_has_integral_float(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_integral_float(item) for item in value)
    return False


def _years_at_the_edge(value: Any) -> bool:
    text = repr(value)
    return "0001-01-01" in text or "9999-12-31" in text


def explained_rejection(case: Any, response: Any) -> bool:
    """A schema-valid request refused for a reason JSON Schema cannot state (each one is shown
    by a test below)."""
    operation = f"{case.method} {case.operation.path}"
    try:
        answer = response.json()
    except ValueError:
        return False
    status = response.status_code
    kinesis_type = answer.get("__type") if isinstance(answer, dict) else None
    message = answer.get("message", "") if isinstance(answer, dict) else ""
    if operation == "DELETE /streams/{stream}":
        return status == 400 and kinesis_type == "AccessDeniedException"
    if operation == "POST /streams/{stream}":
        return status == 400 and kinesis_type == "ResourceInUseException"
    if status != 422 or answer.get("error_code") != 42202:
        return False
    if operation == "PUT /streams/{stream}/record":
        return True
    # An integral float where an integer (or follower_count's integer) is declared.
    if "Input should be a valid" in message and _has_integral_float(case.body):
        return True
    return "not a datetime" in message and _years_at_the_edge(case.body)


def test_generated_requests_pass_every_check(small_api: Api):
    schema = schemathesis.openapi.from_url(f"{small_api.url}/openapi.json")
    # Names that map to a table, so that half the cases reach the record handling (generated
    # names match the documented patterns too, but these keep the draw short).
    known = {"topic": "0a1b2c3d4e5f.pin", "stream": "streaming-0a1b2c3d4e5f-geo"}
    cases = st.one_of(
        [
            schema.as_strategy(mode, path_parameters=parameters)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            for parameters in (None, known)
        ]
    )
    seen: dict[str, set[int]] = {}

    @given(case=cases)
    @settings(
        max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None,
        derandomize=True,
    )  # fmt: skip
    def check(case):
        response = case.call(timeout=30)
        seen.setdefault(f"{case.method} {case.operation.path}", set()).add(response.status_code)
        excluded = [positive_data_acceptance] if explained_rejection(case, response) else []
        case.validate_response(response, excluded_checks=excluded)

    check()
    # Every operation was reached, and the ones that write were answered 200 at least once.
    paths = small_api.client.get("/openapi.json").json()["paths"]
    operations = {f"{method.upper()} {path}" for path, methods in paths.items() for method in methods}
    assert set(seen) == operations, sorted(operations - set(seen))
    for operation in ("POST /topics/{topic}", "PUT /streams/{stream}/records", "POST /v1/events"):
        assert 200 in seen[operation], (operation, seen[operation])


def test_a_405_allows_every_documented_method(small_api: Api):
    """Starlette's 405 named only the first route of the path (``OPTIONS /topics/{topic}``
    answered ``Allow: GET`` without POST)."""
    document = small_api.client.get("/openapi.json").json()
    examples = {"{topic}": "u.pin", "{stream}": "streaming-u-geo"}
    for template, operations in document["paths"].items():
        path = template
        for parameter, example in examples.items():
            path = path.replace(parameter, example)
        documented = {method.upper() for method in operations}
        for method in sorted(set(METHODS) - documented):
            response = small_api.client.request(method, path)
            assert response.status_code == 405, (method, path, response.status_code)
            assert response.json() == {"error_code": 405, "message": "HTTP 405 Method Not Allowed"}
            allowed = {item.strip() for item in response.headers["allow"].split(",")}
            assert allowed == documented, (method, path, allowed)


def test_an_integral_float_is_not_an_integer(small_api: Api):
    """``"index": 2540.0`` is schema-valid (JSON Schema's integer is any number without a
    fraction part) and answered 422, dead-lettered: the raw contract's numbers are strict
    (pinpipe.events: ``1.5`` is not an int) and a record is stored as it came, so a ``2540.0``
    would reach the lake and Spark's ``LongType`` columns as a float. JSON Schema cannot tell
    ``2540`` from ``2540.0``; accepting it would mean normalising the stored value in
    ``events.validate_raw``, a change of the contract, not of its document."""
    response = small_api.client.post("/pin/", json={**PIN, "index": 2540.0})
    assert response.status_code == 422
    assert response.json()["error_code"] == 42202
    assert "index: Input should be a valid integer" in response.json()["message"]
    assert small_api.client.post("/pin/", json={**PIN, "index": 2540}).status_code == 200
    # follower_count may be an integer (stored as text), but not an integral float either.
    response = small_api.client.post("/pin/", json={**PIN, "follower_count": 437.0})
    assert response.status_code == 422
    assert small_api.client.post("/pin/", json={**PIN, "follower_count": 437}).status_code == 200


def test_a_datetime_that_leaves_the_calendar_is_refused(small_api: Api):
    """Matches the documented datetime pattern, but the zone moves the instant before year 1:
    stored datetimes are UTC, and that one has no UTC form."""
    response = small_api.client.post(
        "/geo/", json={**GEO, "timestamp": "0001-01-01T00:00:00+01:00"}
    )
    assert response.status_code == 422
    assert "timestamp: not a datetime" in response.json()["message"]


def test_put_record_data_must_be_a_row_of_the_streams_table(small_api: Api):
    """``Data`` is schema-valid as any row object or any string, but only a row of the table the
    stream's name selects (a geo row on ``...-geo``), as an object, base64 JSON or JSON text,
    is a record: the schema cannot tie the body to the path, nor see inside a string. The
    answer is the contract's 422 (the record is in the dead-letter topic)."""
    for data in (PIN, "", "bm90IGpzb24="):
        response = small_api.client.put("/streams/streaming-u-geo/record", json={"Data": data})
        assert response.status_code == 422, data
        assert response.json()["error_code"] == 42202
    accepted = small_api.client.put("/streams/streaming-u-geo/record", json={"Data": GEO})
    assert accepted.status_code == 200


def test_stream_management_answers_kinesis_400s(small_api: Api):
    """Schema-valid names the API refuses as Kinesis does, with 400 and Kinesis's error type
    (the wire contract, DATA_SPEC.md section 6): CreateStream of a table's stream, which always
    exists (the API creates the topics at start), is ``ResourceInUseException``; DeleteStream is
    ``AccessDeniedException`` unless ``ingest.kinesis_allow_delete`` (a setting, not a shape)."""
    created = small_api.client.post("/streams/streaming-u-pin", json={})
    assert created.status_code == 400
    assert created.json()["__type"] == "ResourceInUseException"
    deleted = small_api.client.delete("/streams/streaming-u-pin")
    assert deleted.status_code == 400
    assert deleted.json()["__type"] == "AccessDeniedException"


def test_rest_proxy_answers_are_declared_in_the_proxys_media_type(small_api: Api):
    document = small_api.client.get("/openapi.json").json()
    for path, method in (("/topics", "get"), ("/topics/{topic}", "get"), ("/topics/{topic}", "post")):
        responses = document["paths"][path][method]["responses"]
        assert list(responses["200"]["content"]) == ["application/vnd.kafka.v2+json"]
        assert list(responses["404" if "{" in path else "401"]["content"]) == ["application/json"]
    response = small_api.client.get("/topics")
    assert response.headers["content-type"] == "application/vnd.kafka.v2+json"
    assert isinstance(response.json(), list)
