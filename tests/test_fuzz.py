"""Hostile input (issue 5): hypothesis fuzzing of ``POST /v1/events`` and schemathesis against the
served OpenAPI document, both on an in-process daemon.

Whatever arrives, the answer is ``202`` or a 4xx in the one error shape, never a 5xx; a rejected
request stores nothing; the daemon stays up. The daemon runs ``run_service`` in a thread of its own
so that the synchronous clients here (hypothesis examples, schemathesis' ``requests``) can call it.
``DISPATCHD_FUZZ_PROFILE=dispatchd-fuzz-long`` runs many more examples.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import gzip
import http.client
import json
import os
import threading
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from schemathesis import BaseSchema, Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

from dispatchd import openapi
from dispatchd.constants import JSON, LEVELS, NDJSON
from dispatchd.service import Service

from .support.inprocess import run_service
from .support.records import record

settings.register_profile(
    "dispatchd-fuzz",
    max_examples=100,
    deadline=None,  # a 4 MiB body or a fresh connection is no reason to fail
    database=None,  # no .hypothesis/ in the work tree; failures print a reproduction blob
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example],
)
settings.register_profile("dispatchd-fuzz-long", settings.get_profile("dispatchd-fuzz"),
                          max_examples=2000)
FUZZ = settings.get_profile(os.environ.get("DISPATCHD_FUZZ_PROFILE", "dispatchd-fuzz"))
MAX_BODY = 4 * 1024 * 1024  # the default server.max_body_bytes, which the fuzzed daemon keeps
EVENTS = "/v1/events"


# -- the daemon in a thread -----------------------------------------------------------------------


class LiveDaemon:
    """``run_service`` on its own event loop in a thread, for synchronous clients."""

    def __init__(self, tmp: Path, **options: Any) -> None:
        self.tmp, self.options = tmp, options
        self.service: Service
        self.url = ""
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="dispatchd-under-test", daemon=True)

    def __enter__(self) -> LiveDaemon:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the daemon did not start: {self._error!r}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the daemon did not shut down"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by __enter__ (start) or the thread hook (later)
            self._error = exc
            self._ready.set()
            raise

    async def _main(self) -> None:
        async with run_service(self.tmp, **self.options) as (service, _, url):
            self.service, self.url = service, url
            self.port = service.port or 0
            # The dispatchers' connections open in their workers, after start-up returns: wait,
            # so that the first test is not blamed for the threads they start.
            while any(w.state == "starting" for w in service.core.workers.values()):
                await asyncio.sleep(0.01)
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._ready.set()
            await self._stop.wait()

    def request(self, method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection: status, headers (lower-case names), body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def post(self, body: bytes, content_type: str | None = JSON,
             headers: dict[str, str] | None = None) -> dict[str, Any]:
        """POST /v1/events and check the invariants every answer keeps; returns its JSON."""
        sent = dict(headers or {})
        if content_type is not None:
            sent["Content-Type"] = content_type
        head = self.service.core.spool.head
        status, got, data = self.request("POST", EVENTS, body, sent)
        assert status < 500, f"{status} for {body[:200]!r} ({content_type!r}): {data[:500]!r}"
        assert got.get("content-type", "").startswith(JSON), (status, got, data[:200])
        answer: dict[str, Any] = json.loads(data)
        answer["status"] = status
        if status == 202:
            assert set(answer) == {"status", "accepted", "ids"}, answer
            assert isinstance(answer["accepted"], int) and len(answer["ids"]) == answer["accepted"]
            assert self.service.core.spool.head == head + answer["accepted"]
        else:
            assert 400 <= status < 500, answer
            assert set(answer) == {"status", "error"}, answer
            error = answer["error"]
            assert set(error) == {"code", "message", "details"}, error
            assert isinstance(error["code"], str) and isinstance(error["message"], str)
            assert isinstance(error["details"], list)
            assert self.service.core.spool.head == head, "a rejected request stored records"
        return answer

    def assert_alive(self) -> None:
        status, _, data = self.request("GET", "/healthz")
        assert (status, json.loads(data)) == (200, {"status": "ok"})


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDaemon]:
    with LiveDaemon(tmp_path_factory.mktemp("fuzz")) as daemon:
        # The database dispatcher opens its read connection (a thread) at the first query: open
        # it now, or the first test that queries would count it as its own leaked thread.
        with urllib.request.urlopen(daemon.url + "/v1/events") as answer:
            assert answer.status == 200
        yield daemon
        daemon.assert_alive()


# -- strategies -----------------------------------------------------------------------------------

BIG_INTS = st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1, 2**64, 10**4000])
JSON_LEAVES = (st.none() | st.booleans() | st.integers() | BIG_INTS
               | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40))
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)
CONTENT_TYPES = st.sampled_from([JSON, NDJSON])
SHORT = st.text(max_size=255)
TIMEZONES = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
TIMESTAMPS = st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1), timezones=TIMEZONES)
LEVEL_VALUES = st.integers(10, 50) | st.sampled_from(list(LEVELS)).flatmap(
    lambda name: st.sampled_from([name, name.lower(), name.title(), f"  {name} "])
)
ENTITIES = st.fixed_dictionaries(
    {"type": SHORT},
    optional={k: SHORT | st.none() for k in ("id", "name", "cluster_id", "status")}
    | {"status_reason": st.text(max_size=1000) | st.none()},
)
ACTIONS = st.fixed_dictionaries(
    {"action": SHORT},
    optional={k: SHORT | st.none()
              for k in ("id", "name", "cause", "status", "target", "user", "project")}
    | {k: st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4)
       for k in ("inputs", "outputs", "data")}
    | {"entity": ENTITIES | st.none(), "status_reason": st.text(max_size=1000) | st.none()},
)
RECORDS = st.fixed_dictionaries(
    {"level": LEVEL_VALUES, "action": ACTIONS},
    optional={
        "id": st.uuids().map(str), "timestamp": TIMESTAMPS.map(datetime.isoformat),
        "phase": SHORT | st.none(), "reason": st.text(max_size=2000) | st.none(),
        "extra": st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4) | st.none(),
    },
)


def full_record() -> dict[str, Any]:
    """A valid record with every field present, so that every path can be replaced."""
    body = record(id="00000000-0000-4000-8000-000000000001", timestamp="2026-01-01T00:00:00Z")
    body["action"] |= {"status_reason": "ok", "target": "t", "outputs": {"o": 1}, "data": {"d": 1}}
    body["action"]["entity"] |= {"cluster_id": None, "status_reason": "fine"}
    return body


def paths(value: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if prefix:
        yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from paths(inner, (*prefix, key))


FIELD_PATHS = sorted(paths(full_record()))


def replaced(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


def encode(records: list[dict[str, Any]], content_type: str, array: bool, ascii_only: bool) -> bytes:
    if content_type == NDJSON:
        return "\n".join(json.dumps(r, ensure_ascii=ascii_only) for r in records).encode()
    data = records if array or len(records) != 1 else records[0]
    return json.dumps(data, ensure_ascii=ascii_only).encode()


# -- hypothesis: POST /v1/events ------------------------------------------------------------------


@FUZZ
@given(records=st.lists(RECORDS, min_size=1, max_size=5), content_type=CONTENT_TYPES,
       array=st.booleans(), ascii_only=st.booleans())
def test_valid_records_are_accepted(live, records, content_type, array, ascii_only):
    answer = live.post(encode(records, content_type, array, ascii_only), content_type)
    assert answer["status"] == 202 and answer["accepted"] == len(records), answer


@FUZZ
@given(value=JSON_VALUES, content_type=CONTENT_TYPES)
def test_random_json_values(live, value, content_type):
    live.post(json.dumps(value).encode(), content_type)  # NaN and Infinity come out as literals


@FUZZ
@given(path=st.sampled_from(FIELD_PATHS), value=JSON_VALUES, content_type=CONTENT_TYPES,
       array=st.booleans())
def test_any_value_in_any_field(live, path, value, content_type, array):
    live.post(encode([replaced(full_record(), path, value)], content_type, array, True), content_type)


@FUZZ
@given(where=st.sampled_from([(), ("action",), ("action", "entity")]), key=st.text(max_size=20),
       value=JSON_VALUES, content_type=CONTENT_TYPES)
def test_unknown_fields_are_422(live, where, key, value, content_type):
    body = full_record()
    known = set(body) | set(body["action"]) | set(body["action"]["entity"])
    if key in known:
        key += "_unknown"
    answer = live.post(encode([replaced(body, (*where, key), value)], content_type, False, True),
                       content_type)
    assert answer["status"] == 422 and answer["error"]["code"] == "validation_failed"


@FUZZ
@given(depth=st.integers(1, 10_000) | st.just(10_000),
       bracket=st.sampled_from([("[", "]"), ('{"a":', "}")]),
       where=st.sampled_from(["top", "level", "extra", "inputs"]), content_type=CONTENT_TYPES)
def test_deep_nesting(live, depth, bracket, where, content_type):
    nested = bracket[0] * depth + "1" + bracket[1] * depth
    if where == "top":
        body = nested
    else:
        path = {"level": ("level",), "extra": ("extra", "x"), "inputs": ("action", "inputs", "x")}
        body = json.dumps(replaced(full_record(), path[where], "@@")).replace('"@@"', nested)
    answer = live.post(body.encode(), content_type)
    if depth >= 1000:
        assert answer["status"] == 400 and answer["error"]["code"] == "bad_json"


@FUZZ
@given(size=st.integers(0, 300) | st.integers(65_000, 66_000)
       | st.integers(MAX_BODY - 2000, MAX_BODY + 2000) | st.integers(0, MAX_BODY + 1024),
       char=st.sampled_from(["x", "é", "\u2028", "😀", "\\u0000", "\\ud83d\\ude00"]),
       path=st.sampled_from([("reason",), ("phase",), ("id",), ("level",), ("extra", "k"),
                             ("action", "action"), ("action", "entity", "type"),
                             ("action", "status_reason")]),
       content_type=CONTENT_TYPES)
def test_huge_strings(live, size, char, path, content_type):
    template = json.dumps(replaced(full_record(), path, "@@"), ensure_ascii=False).encode()
    unit = char.encode()  # escapes such as \\u0000 are repeated whole
    body = template.replace(b"@@", unit * max(0, (size - len(template) + 2) // len(unit)))
    answer = live.post(body, content_type)
    if len(body) > MAX_BODY:
        assert answer["status"] == 413 and answer["error"]["code"] == "request_entity_too_large"


def _invalid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@FUZZ
@given(junk=st.binary(min_size=1, max_size=16).filter(_invalid_utf8), at=st.floats(0, 1),
       content_type=CONTENT_TYPES)
def test_invalid_utf8_is_400(live, junk, at, content_type):
    body = json.dumps(full_record()).encode()
    cut = int(len(body) * at)
    answer = live.post(body[:cut] + junk + body[cut:], content_type)
    assert answer["status"] == 400 and answer["error"]["code"] == "bad_encoding"


@FUZZ
@given(data=st.binary(max_size=4096), content_type=CONTENT_TYPES)
def test_random_bytes(live, data, content_type):
    live.post(data, content_type)


@FUZZ
@given(path=st.sampled_from(FIELD_PATHS), value=JSON_VALUES, same=st.booleans(),
       content_type=CONTENT_TYPES)
def test_duplicate_keys(live, path, value, same, content_type):
    """One key twice in one object, the valid value first or last."""
    body = full_record()
    original = json.loads(json.dumps(body))
    for key in path:
        original = original[key]
    template = json.dumps(replaced(body, path, "@@"))
    key, good, other = json.dumps(path[-1]), json.dumps(original), json.dumps(value)
    if same:
        other = good
    for first, last in ((other, good), (good, other)):
        text = template.replace(f'{key}: "@@"', f"{key}: {first}, {key}: {last}")
        answer = live.post(text.encode(), content_type)
        if same:
            assert answer["status"] == 202, answer


def _stdlib_parses(content_type: str | None) -> bool:
    """False for the headers that crash the stdlib's MIME parser (aiohttp uses it)."""
    parser = email.parser.HeaderParser(policy=email.policy.HTTP)
    try:
        parser.parsestr(f"Content-Type: {content_type}\n").get_content_type()
    except IndexError:
        return False
    return True


MEDIA = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
KNOWN_TYPES = st.sampled_from([
    "application/JSON", "Application/X-NDJSON", "application/json; charset=UTF-8",
    "application/json;charset=utf8", "application/json; charset=latin-1", "application/json;",
    "application/json; charset", 'application/json; charset="', "application/jsonx", "text/json",
    "application/x-ndjson; charset=utf-16", "multipart/form-data; boundary=x", "*/*", "",
])
ANY_TYPES = st.none() | MEDIA | KNOWN_TYPES | st.builds("{}/{}; {}={}".format, MEDIA, MEDIA, MEDIA,
                                                        MEDIA)


@FUZZ
@given(content_type=ANY_TYPES)
def test_random_content_types(live, content_type):
    answer = live.post(json.dumps(record()).encode(), content_type)
    mime = (content_type or "").split(";")[0].strip().lower()
    if answer["status"] == 202:
        assert mime in (JSON, NDJSON), content_type
    else:
        assert answer["status"] == 415 and answer["error"]["code"] == "unsupported_media_type"


def test_nan_infinity_and_huge_integers(live):
    """Literals JSON does not have, and integers past 64 bits: a clear answer, never a 5xx."""
    for literal in ("NaN", "Infinity", "-Infinity", str(10**400), "1e400", "-" + str(10**4000)):
        for field in ("level", "timestamp", "extra", "reason"):
            value = f'{{"k": {literal}}}' if field == "extra" else literal
            text = json.dumps(replaced(full_record(), (field,), "@@")).replace('"@@"', value)
            for content_type in (JSON, NDJSON):
                answer = live.post(text.encode(), content_type)
                if field != "extra":
                    assert answer["status"] in (400, 422), (literal, field, answer)
    live.assert_alive()


# -- found by fuzzing and fixed: each stays as a regression test ---------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_corrupt_content_encoding_is_a_4xx(live, encoding):
    answer = live.post(b"this is not " + encoding.encode(), JSON, {"Content-Encoding": encoding})
    assert answer["status"] == 400


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_bodies_are_read(live, encoding):
    data = json.dumps(record()).encode()
    packed = gzip.compress(data) if encoding == "gzip" else zlib.compress(data)
    assert live.post(packed, JSON, {"Content-Encoding": encoding})["status"] == 202


@pytest.mark.parametrize("timestamp", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_timestamps_without_a_utc_equivalent_are_422(live, timestamp):
    answer = live.post(json.dumps(record(timestamp=timestamp)).encode())
    assert answer["status"] == 422 and answer["error"]["details"][0]["field"] == "timestamp"


@pytest.mark.parametrize("content_type", ["a/b;0*", "application/json; x*", "text/plain; a=;b*"])
def test_unparsable_content_type_is_415(live, content_type):
    assert not _stdlib_parses(content_type)  # really one of those that crash the parser
    answer = live.post(json.dumps(record()).encode(), content_type)
    assert answer["status"] == 415 and answer["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("query", ["timeout=nan", "timeout=-1", "timeout=soon"])
def test_timeout_needs_wait(live, query):
    status, _, data = live.request("POST", f"{EVENTS}?{query}", json.dumps(record()).encode(),
                                   {"Content-Type": JSON})
    assert status == 422 and json.loads(data)["error"]["code"] == "invalid_parameter"


def test_the_daemon_is_still_up(live):
    live.assert_alive()
    assert live.service.core.readiness_problems() == []


# -- schemathesis against the served document ----------------------------------------------------
# schemathesis' own pytest integration (``schemathesis.pytest.from_fixture``) reads a private
# attribute that pytest 9 no longer has, so each operation is driven here through its public
# ``as_strategy`` with hypothesis: positive and negative cases, every check that applies.

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection]
# Negative cases need something to get wrong: a parameter or a body.
OPERATIONS = [
    (path, method.upper(), mode)
    for path, item in openapi.document()["paths"].items() for method, operation in item.items()
    for mode in GenerationMode
    if mode is GenerationMode.POSITIVE or {"parameters", "requestBody"} & set(operation)
]


# A negative body may be generated larger than server.max_body_bytes: 413 rejects it too.
MAX_REQUEST_LINE = 8000  # aiohttp's max_line_size is 8190 bytes, method and version included
REJECTED = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5XX"]


@pytest.fixture(scope="module")
def api_schema(live: LiveDaemon) -> BaseSchema:
    config = SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": REJECTED}}})
    return schemathesis.openapi.from_url(live.url + "/v1/openapi.json", config=config, timeout=10)


@pytest.mark.parametrize(("path", "method", "mode"), OPERATIONS,
                         ids=[f"{m} {p} {mode.value}" for p, m, mode in OPERATIONS])
def test_schemathesis(live, api_schema, path, method, mode):
    operation = api_schema[path][method]

    @settings(FUZZ, max_examples=FUZZ.max_examples // 4)
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: Case) -> None:
        # A request line past aiohttp's limit is refused by its parser, in plain text, before
        # any handler: the limit of the HTTP server, not something the API answers (docs/api.md).
        query = urllib.parse.urlencode(case.query or {}, doseq=True)
        if len(case.formatted_path) + len(query) > MAX_REQUEST_LINE:
            reject()
        case.call_and_validate(checks=CHECKS, timeout=30)

    call()
    live.assert_alive()
