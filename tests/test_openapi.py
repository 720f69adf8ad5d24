"""The OpenAPI document served at ``GET /v1/openapi.json``: valid OpenAPI 3.1, every route of the
app and no other, and real answers that match it."""

from __future__ import annotations

from typing import Any

import jsonschema
from openapi_spec_validator import validate
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from dispatchd import openapi

from .support.inprocess import run_service
from .support.records import record

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


async def served(tmp_path) -> tuple[dict[str, Any], set[tuple[str, str]]]:
    """The document the daemon serves, and the (method, path) of every route of its app."""
    async with run_service(tmp_path) as (service, session, url):
        async with session.get(url + "/v1/openapi.json") as resp:
            assert resp.status == 200 and resp.content_type == "application/json"
            document = await resp.json()
        app = service.app  # the routes the running app was built with
        assert app is not None
    # aiohttp adds a HEAD route beside each GET on its own; HEAD is not part of the API.
    routes = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()
              if r.resource is not None and r.method != "HEAD"}
    return document, routes


async def test_served_document_is_valid_openapi_3_1(tmp_path):
    document, _ = await served(tmp_path)
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema, refs included
    assert document == openapi.document()


async def test_document_lists_every_route_and_no_other(tmp_path):
    document, routes = await served(tmp_path)
    documented = {(method, path) for path, item in document["paths"].items()
                  for method in item if method in METHODS}
    assert documented == routes


def refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {value["$ref"]} if isinstance(value.get("$ref"), str) else set()
        return found.union(*(refs(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(refs(v) for v in value))
    return set()


def test_every_ref_resolves_within_the_document():
    document = openapi.document()
    found = refs(document)
    assert "#/components/schemas/Action" in found and "#/components/schemas/Entity" in found
    for ref in found:
        assert ref.startswith("#/")
        target: Any = document
        for part in ref[2:].split("/"):
            target = target[part]
        assert isinstance(target, dict)
    assert not any(ref.startswith("#/$defs") for ref in found)  # hoisted into components
    assert "$defs" not in document["components"]["schemas"]["Record"]


def validator(schema_name: str) -> jsonschema.Draft202012Validator:
    """A validator for one component schema, resolving refs against the whole document."""
    registry: Registry[Any] = Registry().with_resource(
        "urn:dispatchd", DRAFT202012.create_resource(openapi.document())
    )
    return jsonschema.Draft202012Validator(
        {"$ref": f"urn:dispatchd#/components/schemas/{schema_name}"}, registry=registry
    )


def test_record_schema_matches_the_model():
    check = validator("Record")
    assert check.is_valid(record())
    assert check.is_valid(record(level=30, id="00000000-0000-4000-8000-000000000001"))
    assert check.is_valid(record(level="WARNING"))
    assert not check.is_valid(record(level=99))
    assert not check.is_valid(record(unknown=1))  # extra="forbid"
    bad = record()
    del bad["action"]["action"]
    assert not check.is_valid(bad)


def test_error_answers_share_one_shape_and_503_has_retry_after():
    document = openapi.document()
    responses = document["components"]["responses"]
    for status in (400, 401, 413, 415, 422, 503):
        answer = responses[f"Error{status}"]
        assert answer["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
    assert responses["Error503"]["headers"]["Retry-After"]["required"] is True
    events = document["paths"]["/v1/events"]["post"]
    for status in ("202", "400", "401", "413", "415", "422", "503"):
        assert status in events["responses"]
    body = events["requestBody"]["content"]
    assert set(body) == {"application/json", "application/x-ndjson"}
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert {} in events["security"]  # tokens are optional
    assert document["paths"]["/healthz"]["get"]["security"] == []


async def test_real_answers_match_their_schemas(tmp_path):
    async with run_service(tmp_path) as (_, session, url):
        async with session.post(url + "/v1/events", json=[record(), record()]) as resp:
            assert resp.status == 202
            validator("Accepted").validate(await resp.json())
        async with session.post(url + "/v1/events", json=record(level=99)) as resp:
            assert resp.status == 422
            validator("Error").validate(await resp.json())
        async with session.get(url + "/v1/dispatchers") as resp:
            for status in (await resp.json())["dispatchers"]:
                validator("DispatcherStatus").validate(status)
