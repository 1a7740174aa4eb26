"""Schemathesis against the app's own OpenAPI document: valid and invalid requests to every
operation, never a 5xx, and every answer JSON (or the metrics text).

The cases come from ``schema.as_strategy`` driven by Hypothesis directly (the schemathesis
pytest plugin's lazy fixtures do not work with pytest 9 yet).
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.ingest.conftest import make_settings, running_api

pytestmark = pytest.mark.integration

CONTENT_TYPES = ("application/json", "application/vnd.kafka.v2+json", "text/plain")


def test_no_server_error_for_any_generated_request(kafka_bootstrap):
    with running_api(make_settings(kafka_bootstrap, max_records_per_request=50)) as api:
        schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
        # Random topic and stream names mostly get 404; half the cases use names that map to a
        # table so that the bodies reach the REST-proxy and Kinesis record handling.
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
        # derandomize: the same cases every run. With the Kinesis management routes the 400
        # cases spread over more operations, and a random draw sometimes gave `POST /pin/` no
        # accepted case at all (1 run in 2 failed the reach check below).
        @settings(
            max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None,
            derandomize=True,
        )
        def check(case):
            response = case.call(timeout=30)
            seen.setdefault(f"{case.method} {case.operation.path}", set()).add(response.status_code)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
            )
            (content_type,) = response.headers.get("content-type", [""])
            assert content_type.startswith(CONTENT_TYPES), content_type

        check()
    # The run reached the operations that write to Kafka, and some requests were accepted.
    for operation in (
        "POST /topics/{topic}",
        "PUT /streams/{stream}/records",
        "POST /v1/events",
        "POST /pin/",
    ):
        assert 200 in seen.get(operation, ()), (operation, seen.get(operation))
    print({operation: sorted(statuses) for operation, statuses in sorted(seen.items())})
