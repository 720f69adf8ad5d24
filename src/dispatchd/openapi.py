"""The OpenAPI document the daemon serves at ``GET /v1/openapi.json``."""

from __future__ import annotations

from typing import Any

from . import __version__
from .constants import (
    API_PREFIX,
    EVENT_DEFAULT_SORT,
    EVENT_FILTERS,
    EVENT_LIMIT,
    EVENT_MAX_LENGTH,
    EVENT_MAX_LIMIT,
    EVENT_MAX_VALUES,
    EVENT_SORT_KEYS,
    JSON,
    LEVEL_MAX,
    LEVEL_MIN,
    LEVELS,
    NDJSON,
    SHORT_ID,
)
from .models import Record

Schema = dict[str, Any]

REF = "#/components/schemas/{model}"
NULLABLE_STR: Schema = {"type": ["string", "null"]}
STRINGS: Schema = {"type": "array", "items": {"type": "string"}}
COUNT: Schema = {"type": "integer", "minimum": 0}
# Any request under /v1 may be answered with these.
ERRORS_V1 = (400, 401, 413, 415)
ERRORS = {
    400: "Malformed request: bad JSON, bad UTF-8, or a bad request line or header; for the "
         "event query, an unknown parameter or a bad value (code invalid_parameter, details "
         "name the field)",
    401: "A valid bearer token is required (only when the server has tokens)",
    408: "The request body did not arrive within server.read_timeout",
    404: "No such route, no dispatcher of that name (code unknown_dispatcher), or no event "
         "with that id (event_not_found)",
    405: "The route does not take this method",
    409: "The dispatcher is not enabled (not_enabled); the database dispatcher, whose table "
         "the event query reads, is not enabled (no_event_store); an id prefix matches more "
         "than one event (ambiguous_id)",
    413: "The body is larger than server.max_body_bytes",
    415: "The content type or charset is not accepted",
    422: "Invalid record(s) or parameter; details name the record index and field",
    503: "The spool is full, low on disk space or unavailable, request bodies in flight fill "
         "server.max_inflight_bytes, dispatchd is shutting down, or the event store cannot be "
         "read now (store_unavailable)",
}


def _obj(required: list[str], **properties: Schema) -> Schema:
    return {"type": "object", "required": required, "properties": properties}


def _ref(name: str) -> Schema:
    return {"$ref": REF.format(model=name)}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _query(name: str, schema: Schema, description: str, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


def _op(summary: str, ok: dict[int, Schema], errors: tuple[int, ...] = (), *,
        guarded: bool = True, **more: Any) -> Schema:
    """One operation: its answers, the error answers it may give, and its security."""
    responses = {str(status): answer for status, answer in ok.items()}
    for status in sorted({*errors, *(ERRORS_V1 if guarded else ())}):
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    # Tokens are optional: with none configured, no Authorization header is needed.
    security: list[Schema] = [{}, {"bearerAuth": []}] if guarded else []
    return {"summary": summary, "security": security, "responses": responses, **more}


def _schemas() -> dict[str, Schema]:
    record = Record.model_json_schema(ref_template=REF)
    schemas: dict[str, Schema] = record.pop("$defs", {})
    # The pydantic validators accept more than the plain types say: name both forms.
    record["properties"]["level"] = {"anyOf": [
        {"type": "integer", "minimum": LEVEL_MIN, "maximum": LEVEL_MAX},
        {"type": "string", "enum": list(LEVELS), "description": "a level name, in any case"},
    ]}
    record["properties"]["id"] |= {"format": "uuid"}
    error = _obj(["code", "message", "details"], code={"type": "string"},
                 message={"type": "string"}, details={"type": "array"})
    schemas |= {
        "Record": record,
        "Error": _obj(["error"], error=error | {"additionalProperties": False}),
        "Accepted": _obj(
            ["accepted", "ids"], accepted=COUNT, ids=STRINGS,
            delivery={"type": "object", "description": "with ?wait=delivered: per dispatcher",
                      "additionalProperties": _obj(["status"], status={"type": "string"})},
        ),
        "DispatcherStatus": _obj(
            ["name", "enabled", "state", "backlog", "dead_letters"], name={"type": "string"},
            enabled={"type": "boolean"}, state={"type": "string"}, backlog=COUNT,
            dead_letters=COUNT, delivered=COUNT, skipped=COUNT, failed=COUNT,
            dead_lettered=COUNT, last_error=NULLABLE_STR,
            lag_seconds={"type": "number", "minimum": 0,
                         "description": "age of the oldest record this dispatcher still owes"},
            report={"type": "object", "description": "the dispatcher's own facts (report())",
                    "additionalProperties": {"type": ["string", "number", "boolean"]}},
        ),
        "Event": _obj(
            ["id", "timestamp", "oid", "oname", "otype", "cluster_id", "level", "user", "project",
             "action", "status", "status_reason", "meta_data"],
            id={"type": "string"}, timestamp={"type": "string", "format": "date-time"},
            **{name: NULLABLE_STR for name in ("oid", "oname", "otype", "cluster_id", "level",
                                                "user", "project", "action", "status",
                                                "status_reason")},
            meta_data={"description": "the record's extra, an object as stored"},
        ),
        "DeadLetter": _obj(
            ["id", "dispatcher", "seq", "error", "attempts", "failed_at", "record"],
            id={"type": "integer"}, dispatcher={"type": "string"}, seq={"type": "integer"},
            error={"type": "string"}, attempts=COUNT,
            failed_at={"type": "string", "format": "date-time"},
            record={"type": "object"},
        ),
    }
    return schemas


def _responses() -> dict[str, Schema]:
    answers = {f"Error{status}": _json(_ref("Error"), text) for status, text in ERRORS.items()}
    answers["Error503"]["headers"] = {"Retry-After": {
        "description": "Seconds to wait before trying again", "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }}
    answers["Error401"]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return answers


def _events() -> Schema:
    records = {"oneOf": [_ref("Record"), {"type": "array", "items": _ref("Record")}]}
    body = {"required": True, "content": {
        JSON: {"schema": records},
        NDJSON: {"schema": {"type": "string", "description": "one Record per line"}},
    }}
    params = [
        _query("wait", {"type": "string", "enum": ["delivered"]},
               "answer once every enabled dispatcher has handled the records"),
        _query("timeout", {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
               "seconds to wait with wait=delivered (default 10)"),
    ]
    return _op(
        "Ingest one record, an array of records, or NDJSON; all or nothing",
        {200: _json(_ref("Accepted"), "With ?wait=delivered: committed and delivered everywhere"),
         202: _json(_ref("Accepted"), "Committed to the spool")},
        (408, 422, 503), parameters=params, requestBody=body,
    )


def _event_query() -> Schema:
    repeatable: Schema = {"type": "array", "maxItems": EVENT_MAX_VALUES,
                          "items": {"type": "string", "maxLength": EVENT_MAX_LENGTH}}
    key = f"({'|'.join(EVENT_SORT_KEYS)})(:(asc|desc))?"
    # Times and levels are checked by the server (400), so their schemas are plain strings.
    params = [
        {**_query(name, repeatable, f"only events with this {name}; repeat for any of several"
                  + (f" (a level {LEVEL_MIN}..{LEVEL_MAX} or a name: {', '.join(LEVELS)}, "
                     "any case)" if name == "level" else "")),
         "style": "form", "explode": True}
        for name in EVENT_FILTERS
    ] + [
        _query("since", {"type": "string"},
               "only events at or after this RFC 3339 time (without an offset: UTC)"),
        _query("until", {"type": "string"}, "only events before this time"),
        _query("sort", {"type": "string", "pattern": f"^{key}(,{key})*$"},
               f"key[:asc|desc],... then id ascending (default {EVENT_DEFAULT_SORT}); NULLs "
               "sort first ascending, last descending"),
        _query("limit", {"type": "integer", "minimum": 1, "maximum": EVENT_MAX_LIMIT},
               f"at most this many (default {EVENT_LIMIT})"),
        _query("marker", {"type": "string", "pattern": "^[0-9a-f-]{1,36}$"},
               "the id of the last event seen: the page after it (keyset, stable under inserts)"),
    ]
    return _op("Stored events (the database dispatcher's table), Senlin's filters and order",
               {200: _json(_obj(["events"], events={"type": "array", "items": _ref("Event")}),
                           "One page of events")},
               (400, 409, 503), parameters=params)


def _event_by_id() -> Schema:
    ident = {"name": "id", "in": "path", "required": True,
             "description": f"the full id or a unique prefix of {SHORT_ID}+ characters",
             "schema": {"type": "string", "pattern": f"^[0-9a-fA-F-]{{{SHORT_ID},36}}$"}}
    return _op("One stored event, by id or short id",
               {200: _json(_obj(["event"], event=_ref("Event")), "The event")},
               (400, 404, 409, 503), parameters=[ident])


def _paths() -> dict[str, Schema]:
    name = _query("dispatcher", {"type": "string", "minLength": 1}, "dispatcher name", True)
    any_object = {"type": "object"}
    v1 = {
        "/events": {"post": _events(), "get": _event_query()},
        "/events/{id}": {"get": _event_by_id()},
        "/status": {"get": _op("One snapshot: spool, config and every dispatcher", {200: _json(
            _obj(["accepted", "stopping", "spool", "config", "dispatchers"], accepted=COUNT,
                 stopping={"type": "boolean"}, spool=any_object, config=any_object,
                 dispatchers={"type": "array", "items": _ref("DispatcherStatus")}),
            "Status")})},
        "/dispatchers": {"get": _op("Status of every configured dispatcher", {200: _json(
            _obj(["dispatchers"], dispatchers={"type": "array", "items": _ref("DispatcherStatus")}),
            "Dispatchers, enabled first")})},
        "/config": {"get": _op("The loaded configuration's generation and state", {200: _json(
            _obj(["generation", "enabled"], generation=COUNT, path=NULLABLE_STR,
                 loaded_at={"type": "string", "format": "date-time"},
                 last_reload_error=NULLABLE_STR, restart_required=STRINGS, enabled=STRINGS),
            "Config status")})},
        "/config/reload": {"post": _op("Reload the config file now", {200: _json(
            _obj(["generation", "started", "stopped", "restarted", "restart_required"],
                 generation=COUNT, started=STRINGS, stopped=STRINGS, restarted=STRINGS,
                 restart_required=STRINGS),
            "Applied")}, (422,))},
        "/openapi.json": {"get": _op("This document", {200: _json(any_object, "OpenAPI 3.1")})},
        "/dead-letters": {
            "get": _op("Dead letters, oldest first", {200: _json(
                _obj(["dead_letters"], dead_letters={"type": "array", "items": _ref("DeadLetter")}),
                "Dead letters")}, (404, 422), parameters=[
                    _query("dispatcher", {"type": "string"}, "only this dispatcher's"),
                    _query("after", {"type": "integer", "minimum": 0, "maximum": 2**62},
                           "only ids after this one"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000},
                           "at most this many (default 100)"),
                ]),
            "delete": _op("Purge a dispatcher's dead letters", {200: _json(
                _obj(["dispatcher", "purged"], dispatcher={"type": "string"}, purged=COUNT),
                "Purged")}, (404, 422), parameters=[name]),
        },
        "/dead-letters/replay": {"post": _op("Send a dispatcher's dead letters back to it", {200: _json(
            _obj(["dispatcher", "replayed"], dispatcher={"type": "string"}, replayed=COUNT),
            "Replayed")}, (404, 409, 422, 503), parameters=[name])},
    }
    status = {"type": "string"}
    return {
        **{API_PREFIX + path: item for path, item in v1.items()},
        "/healthz": {"get": _op("Liveness", {200: _json(_obj(["status"], status=status), "Alive")},
                                guarded=False)},
        "/readyz": {"get": _op("Readiness: spool open, not full, space above the reserve, not "
                                "shutting down", {
            200: _json(_obj(["status"], status=status), "Ready"),
            503: _json(_obj(["status", "problems"], status=status, problems=STRINGS), "Not ready"),
        }, guarded=False)},
        # Guarded only when server.metrics_public is false; 401 is listed either way.
        "/metrics": {"get": _op("Prometheus metrics", {200: {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}}}}, (401,),
            guarded=False, security=[{}, {"bearerAuth": []}])},
    }


def document() -> dict[str, Any]:
    """OpenAPI 3.1 for the HTTP surface; the record schema comes from the pydantic model."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "dispatchd", "version": __version__,
                 "description": "Durable event ingest and fan-out to dispatchers"},
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "responses": _responses(),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
