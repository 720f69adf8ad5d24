"""The HTTP contract, against a Service run in-process on port 0."""

from __future__ import annotations

import json

import aiohttp
import pytest

from .support.daemon import eventually
from .support.inprocess import run_service
from .support.records import record


@pytest.fixture
async def daemon(tmp_path):
    async with run_service(tmp_path) as running:
        yield running


async def test_one_record_array_and_ndjson_are_accepted(daemon):
    service, session, url = daemon
    one = record(id="00000000-0000-4000-8000-000000000001")
    async with session.post(url + "/v1/events", json=one) as resp:
        assert resp.status == 202
        assert await resp.json() == {"accepted": 1, "ids": [one["id"]]}
    async with session.post(url + "/v1/events", json=[record(), one, record()]) as resp:
        body = await resp.json()
        assert resp.status == 202 and body["accepted"] == 3 and body["ids"][1] == one["id"]
        assert len(set(body["ids"])) == 3
    ndjson = "\n".join(json.dumps(record()) for _ in range(4)) + "\n\n"
    headers = {"Content-Type": "application/x-ndjson"}
    async with session.post(url + "/v1/events", data=ndjson, headers=headers) as resp:
        assert resp.status == 202 and (await resp.json())["accepted"] == 4
    assert service.core.spool.head == 8


async def test_accepted_means_committed(tmp_path):
    import sqlite3

    (tmp_path / "flaky.down").touch()  # the only dispatcher is down: records stay in the spool
    async with run_service(tmp_path, ["flaky"]) as (_, session, url):
        async with session.post(url + "/v1/events", json=[record(), record()]) as resp:
            ids = (await resp.json())["ids"]
        db = sqlite3.connect(tmp_path / "spool.db")  # another connection sees them at once
        try:
            stored = [json.loads(line)["id"] for (b,) in db.execute("SELECT body FROM spool")
                      for line in b.split("\n")]  # a request's records share a row
        finally:
            db.close()
    assert stored == ids


async def error_of(resp: aiohttp.ClientResponse) -> dict:
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    return body["error"]


async def test_one_bad_record_rejects_the_whole_request(daemon):
    service, session, url = daemon
    bad = record()
    bad["action"]["entity"] = {"id": "x"}  # entity.type missing
    async with session.post(url + "/v1/events", json=[record(), record(), bad]) as resp:
        assert resp.status == 422
        error = await error_of(resp)
    assert error["code"] == "validation_failed"
    assert error["details"][0]["index"] == 2
    assert error["details"][0]["field"] == "action.entity.type"
    assert service.core.spool.head == 0


async def test_ndjson_errors_name_the_record_index(daemon):
    service, session, url = daemon
    lines = [json.dumps(record()), json.dumps(record(level=99)), json.dumps(record())]
    headers = {"Content-Type": "application/x-ndjson"}
    async with session.post(url + "/v1/events", data="\n".join(lines), headers=headers) as resp:
        assert resp.status == 422
        detail = (await error_of(resp))["details"][0]
    assert (detail["index"], detail["field"]) == (1, "level")
    lines[2] = "{nope"
    async with session.post(url + "/v1/events", data="\n".join(lines), headers=headers) as resp:
        assert resp.status == 400 and (await error_of(resp))["code"] == "bad_json"
    assert service.core.spool.head == 0


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b'{"level": "INFO", "action": {"action"', 400, "bad_json"),
        (b"", 400, "bad_json"),
        (b'{"level": "INFO", "reason": "\xff\xfe", "action": {"action": "X"}}', 400, "bad_encoding"),
        (b"[1, 2]", 422, "validation_failed"),
        (b'"just a string"', 422, "validation_failed"),
    ],
)
async def test_malformed_bodies(daemon, data, status, code):
    service, session, url = daemon
    headers = {"Content-Type": "application/json"}
    async with session.post(url + "/v1/events", data=data, headers=headers) as resp:
        assert resp.status == status
        assert (await error_of(resp))["code"] == code
    assert service.core.spool.head == 0


@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", "application/json; charset=latin-1"])
async def test_other_content_types_are_415(daemon, ctype):
    _, session, url = daemon
    data = json.dumps(record())
    async with session.post(url + "/v1/events", data=data, headers={"Content-Type": ctype}) as resp:
        assert resp.status == 415
        assert (await error_of(resp))["code"] == "unsupported_media_type"


async def test_body_over_max_body_bytes_is_413(tmp_path):
    server = {"max_body_bytes": 2000}
    async with run_service(tmp_path, server=server) as (service, session, url):
        async with session.post(url + "/v1/events", json=record(reason="x" * 3000)) as resp:
            assert resp.status == 413
            assert (await error_of(resp))["code"] == "request_entity_too_large"
        async with session.post(url + "/v1/events", json=record(reason="x" * 100)) as resp:
            assert resp.status == 202
        assert service.core.spool.head == 1


async def test_more_records_than_max_batch_is_422(tmp_path):
    async with run_service(tmp_path, server={"max_batch": 3}) as (service, session, url):
        async with session.post(url + "/v1/events", json=[record()] * 4) as resp:
            assert resp.status == 422
            assert (await error_of(resp))["code"] == "too_many_records"
        ndjson = "\n".join(json.dumps(record()) for _ in range(4))
        headers = {"Content-Type": "application/x-ndjson"}
        async with session.post(url + "/v1/events", data=ndjson, headers=headers) as resp:
            assert resp.status == 422
        async with session.post(url + "/v1/events", json=[record()] * 3) as resp:
            assert resp.status == 202
        assert service.core.spool.head == 3


async def test_full_spool_is_503_with_retry_after_and_recovers(tmp_path):
    (tmp_path / "flaky.down").touch()
    limits = {"server": {"max_batch": 5}, "spool": {"max_events": 5}}  # max_batch <= max_events
    async with run_service(tmp_path, ["flaky"], **limits) as (_, session, url):
        async with session.post(url + "/v1/events", json=[record()] * 5) as resp:
            assert resp.status == 202
        async with session.post(url + "/v1/events", json=record()) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "1"
            assert (await error_of(resp))["code"] == "spool_full"
        async with session.get(url + "/readyz") as resp:
            assert resp.status == 503
        (tmp_path / "flaky.down").unlink()  # the sink comes back and drains the spool

        async def ready() -> bool:
            async with session.get(url + "/readyz") as resp:
                return resp.status == 200

        await eventually(ready, timeout=10)
        async with session.post(url + "/v1/events", json=record()) as resp:
            assert resp.status == 202


async def test_bearer_tokens_guard_v1_but_not_health(tmp_path):
    tokens = {"auth_tokens": ["s3cret", "other"]}
    async with run_service(tmp_path, server=tokens) as (_, session, url):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            async with session.post(url + "/v1/events", json=record(), headers=headers) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await error_of(resp))["code"] == "unauthorized"
        good = {"Authorization": "Bearer other"}
        async with session.post(url + "/v1/events", json=record(), headers=good) as resp:
            assert resp.status == 202
        for path in ("/healthz", "/readyz"):
            async with session.get(url + path) as resp:
                assert resp.status == 200


async def test_unknown_routes_and_methods_use_the_error_shape(daemon):
    _, session, url = daemon
    async with session.get(url + "/v1/nothing") as resp:
        assert resp.status == 404 and (await error_of(resp))["code"] == "not_found"
    async with session.delete(url + "/v1/events") as resp:
        assert resp.status == 405 and (await error_of(resp))["code"] == "method_not_allowed"


async def test_dispatcher_status(tmp_path):
    async with run_service(tmp_path, ["database", "broken", "nope"]) as (_, session, url):
        async with session.get(url + "/v1/dispatchers") as resp:
            status = {d["name"]: d for d in (await resp.json())["dispatchers"]}
    assert status["database"]["enabled"] and status["database"]["state"] in ("starting", "running")
    assert status["broken"]["state"] == "failed" and "ImportError" in status["broken"]["last_error"]
    assert status["nope"]["state"] == "failed" and "no dispatcher named" in status["nope"]["last_error"]
    # A disabled dispatcher has every field of an enabled one, at zero.
    assert status["jsonfile"] == {"name": "jsonfile", "enabled": False, "state": "stopped",
                                  "backlog": 0, "delivered": 0, "skipped": 0, "failed": 0,
                                  "dead_lettered": 0, "dead_letters": 0, "last_error": None,
                                  "lag_seconds": 0.0, "report": {}}
    assert set(status["database"]) == set(status["jsonfile"])
    assert status["database"]["report"]["url"].startswith("sqlite:///")


async def test_shutdown_answers_503(daemon):
    service, session, url = daemon
    service.core.stopping = True
    async with session.post(url + "/v1/events", json=record()) as resp:
        assert resp.status == 503 and resp.headers["Retry-After"]
        assert (await error_of(resp))["code"] == "shutting_down"
    async with session.get(url + "/readyz") as resp:
        assert resp.status == 503
    async with session.get(url + "/healthz") as resp:
        assert resp.status == 200


async def test_wait_delivered_answers_once_every_dispatcher_has_the_records(tmp_path):
    async with run_service(tmp_path, ["database", "jsonfile"]) as (_, session, url):
        body = [record(), record(level="DEBUG")]
        async with session.post(url + "/v1/events?wait=delivered", json=body) as resp:
            assert resp.status == 200
            answer = await resp.json()
    assert answer["delivery"] == {"database": {"status": "delivered", "filtered": 0},
                                  "jsonfile": {"status": "delivered", "filtered": 0}}
    ids = {json.loads(line)["id"] for line in (tmp_path / "events.jsonl").read_text().splitlines()}
    assert set(answer["ids"]) == ids  # really there when the answer came


async def test_wait_delivered_reports_each_dispatcher_on_its_own(tmp_path):
    enabled = ["database", "slow", "failing", "broken"]
    slow = {"slow": {"delay": 3600}}
    async with run_service(tmp_path, enabled, dispatchers=slow) as (_, session, url):
        async with session.post(url + "/v1/events?wait=delivered&timeout=1.5",
                                json=record()) as resp:
            assert resp.status == 202  # accepted and durable, not delivered everywhere
            delivery = (await resp.json())["delivery"]
    assert delivery["database"]["status"] == "delivered"
    assert delivery["slow"] == {"status": "pending", "error": None}  # still inside its call
    assert delivery["failing"] == {"status": "dead_lettered", "count": 1,
                                   "error": "RuntimeError: always fails"}
    assert delivery["broken"]["status"] == "failed"


@pytest.mark.parametrize("query", ["wait=soon", "wait=delivered&timeout=0",
                                   "wait=delivered&timeout=nan", "wait=delivered&timeout=9999"])
async def test_bad_wait_parameters_are_422(daemon, query):
    service, session, url = daemon
    async with session.post(url + "/v1/events?" + query, json=record()) as resp:
        assert resp.status == 422 and (await error_of(resp))["code"] == "invalid_parameter"
    assert service.core.spool.head == 0
