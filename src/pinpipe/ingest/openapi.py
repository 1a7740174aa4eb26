"""The ingest API's OpenAPI document: what JSON Schema says of the raw rows beyond their pydantic
models (datetime patterns, integer bounds), the path parameters that name a table, the request
bodies and error answers each route documents, and :func:`install_openapi` (the models
themselves are :mod:`pinpipe.ingest.schemas`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from pinpipe.ingest.schemas import (
    COMPONENT_MODELS,
    ErrorBody,
    KinesisBatchEntry,
    KinesisErrorBody,
    NativeEvent,
    RestProxyRecord,
)

# --- What JSON Schema can say of the raw rows that their pydantic models do not --------------

_YEAR = "(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = (
    "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_TIME = "[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:[.][0-9]+)?"
_ZONE = "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?"
DATETIME_PATTERN = f"^(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29){_TIME}{_ZONE}$"
"""The wire datetimes of DATA_SPEC.md ("Datetimes on the wire"): ``T`` or a space, optional
fractional seconds, optional zone; calendar dates only (no 2021-02-29). What it cannot say:
a zone that moves the instant out of years 1..9999 (``0001-01-01T00:00:00+01:00``) is
refused too (:func:`pinpipe.events.parse_datetime` overflows)."""

DATETIME_FIELDS = {"RawGeo": ("timestamp",), "RawUser": ("date_joined",)}

# orjson reads an integer outside these bounds as a float, which the strict models refuse.
INTEGER_BOUNDS = {"minimum": -(2**63), "maximum": 2**64 - 1}
INTEGER_MODELS = ("RawPin", "RawGeo", "RawUser", "KinesisCreateStream")


def _raw_row_schemas(schemas: dict[str, Any]) -> None:
    """Datetime fields get :data:`DATETIME_PATTERN`; ``follower_count`` may be an integer
    (stored as text, see :class:`pinpipe.events.RawPin`); integers get :data:`INTEGER_BOUNDS`."""
    for model, fields in DATETIME_FIELDS.items():
        for field in fields:
            for branch in schemas[model]["properties"][field]["anyOf"]:
                if branch.get("type") == "string":
                    branch["pattern"] = DATETIME_PATTERN
    count = schemas["RawPin"]["properties"]["follower_count"]
    count["anyOf"].insert(1, {"type": "integer"})
    for model in INTEGER_MODELS:
        for field in schemas[model]["properties"].values():
            for branch in field.get("anyOf", [field]):
                if branch.get("type") == "integer":
                    for bound, value in INTEGER_BOUNDS.items():
                        branch.setdefault(bound, value)


def _batches(document: dict[str, Any], max_records: int) -> None:
    """A batch's envelope is checked as a whole (at most ``max_records`` items, else 422); each
    item on its own: one that is not a record gets its error in its own result, not a 4xx."""
    schemas = document["components"]["schemas"]
    for model, item, where in (
        ("RestProxyRequest", RestProxyRecord, "its offsets slot"),
        ("KinesisPutRecords", KinesisBatchEntry, "its Records entry"),
    ):
        schemas[model]["properties"]["records"].update(
            items=any_item(item, where), maxItems=max_records
        )
    events = document["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    for media in events.values():
        media["schema"].update(items=any_item(NativeEvent, "its results entry"), maxItems=max_records)


# --- Path parameters: which names map to a table ---------------------------------------------

_TABLES = "(?:pin|geo|user)"
PATH_PARAMETERS: dict[tuple[str, str], dict[str, Any]] = {
    # Any topic ending in .<table>, or the bare table name (rest_proxy.table_of_topic).
    ("/topics/{topic}", "topic"): {"type": "string", "pattern": f"^(?:[^/]*[.])?{_TABLES}$"},
    # Any stream ending in -<table> (streams.table_of); other names answer 404.
    ("/streams/{stream}/record", "stream"): {"type": "string", "pattern": f"^[^/]*-{_TABLES}$"},
    ("/streams/{stream}/records", "stream"): {"type": "string", "pattern": f"^[^/]*-{_TABLES}$"},
    # Kinesis's stream names (streams.check_name) that map to a table (streams.pipeline_table).
    ("/streams/{stream}", "stream"): {
        "type": "string", "maxLength": 128, "pattern": f"^[a-zA-Z0-9_.-]*-{_TABLES}$",
    },
}  # fmt: skip


def _path_parameters(paths: dict[str, Any]) -> None:
    for path, operations in paths.items():
        for operation in operations.values():
            for parameter in operation.get("parameters", ()):
                schema = PATH_PARAMETERS.get((path, parameter["name"]))
                if parameter["in"] == "path" and schema is not None:
                    parameter["schema"] = {**parameter.get("schema", {}), **schema}


def _drop_fastapi_validation_errors(document: dict[str, Any]) -> None:
    """FastAPI documents a 422 ``HTTPValidationError`` for every route with parameters; this
    API never answers that shape (:mod:`pinpipe.ingest.errors` answers ``ErrorBody``)."""
    fastapi_error = "#/components/schemas/HTTPValidationError"
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422", {})
            for media in answer.get("content", {}).values():
                if media.get("schema", {}).get("$ref") == fastapi_error:
                    del operation["responses"]["422"]
                    break
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def request_body(
    model: type[BaseModel],
    media_types: tuple[str, ...],
    *,
    array: bool = False,
    required: bool = True,
) -> dict[str, Any]:
    """``openapi_extra`` declaring a body of ``model`` (or an array of it)."""
    schema: dict[str, Any] = {"type": "array", "items": _ref(model)} if array else _ref(model)
    return {
        "requestBody": {
            "required": required,
            "content": {media: {"schema": schema} for media in media_types},
        }
    }


def any_item(model: type[BaseModel], where: str) -> dict[str, Any]:
    """A batch item: ``model``, or any other value, which the batch accepts and answers with an
    error in the item's own result (and keeps in the dead-letter topic)."""
    other = {"description": f"Any other value: accepted, its error in {where}."}
    return {"anyOf": [_ref(model), other]}


_DESCRIPTIONS = {
    400: "Malformed JSON (or, on the stream-management routes, a request Kinesis refuses).",
    401: "Missing or invalid API key (only when API keys are configured).",
    404: "The topic or stream maps to no table.",
    413: "The body, or one record, is too large.",
    415: "Unsupported Content-Type.",
    422: "The request envelope is invalid, or the record was invalid (dead-letter topic).",
    429: "The producer queue is full: retry after Retry-After seconds.",
    431: "The request headers are too large.",
    502: "The broker refused for a non-transient reason.",
    503: "The broker is unavailable: retry after Retry-After seconds.",
}
_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
}


def _error_response(status: int, model: type[BaseModel]) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": _DESCRIPTIONS.get(status, "Error"),
        "content": {"application/json": {"schema": _ref(model)}},
    }
    if status in (429, 503):
        answer["headers"] = _RETRY_AFTER
    return answer


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries documenting proxy-style error bodies (always ``application/json``,
    whatever the route's success media type), plus 431 which every route can answer."""
    return {status: _error_response(status, ErrorBody) for status in sorted({*statuses, 431})}


def kinesis_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries documenting Kinesis error bodies (401 and 431 stay proxy-style:
    they are answered before the route)."""
    return {
        status: _error_response(status, ErrorBody if status in (401, 431) else KinesisErrorBody)
        for status in sorted({*statuses, 431})
    }


def install_openapi(app: FastAPI) -> None:
    """Generate the OpenAPI document once, with the component models in its components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in COMPONENT_MODELS:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
            _raw_row_schemas(schemas)
            _batches(document, app.state.settings.ingest.max_records_per_request)
            _path_parameters(document.get("paths", {}))
            _drop_fastapi_validation_errors(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
