"""The HTTP surface: routes, the one error shape, and request-body decoding for ingest."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import ValidationError
from pydantic_core import to_json

from . import metrics, openapi
from .constants import API_PREFIX, JSON, NDJSON, RETRY_AFTER_FULL, RETRY_AFTER_STOPPING
from .errors import ApiError, SpoolFull, SpoolUnavailable
from .models import RECORD, RECORDS, Record

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger(__name__)

SERVICE: web.AppKey[Service] = web.AppKey("service")
MAX_DETAILS = 100
DEFAULT_WAIT = 10.0  # seconds ?wait=delivered waits unless ?timeout= says otherwise
MAX_WAIT = 300.0


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # pydantic-core's serializer: the 202 of every ingest is built here, several times faster
    # than json.dumps; anything it cannot encode is written as its str(), as before.
    body = to_json(data, fallback=str)
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")


# -- body decoding --------------------------------------------------------------------------------


def decode_records(body: bytes, content_type: str, max_batch: int) -> list[Record]:
    """Validate a whole request body (one record, an array, or NDJSON); all or nothing."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_encoding", f"body is not valid UTF-8: {exc}") from None
    if content_type == NDJSON:
        return _decode_ndjson(body, max_batch)
    is_array = body.lstrip()[:1] == b"["
    try:
        records = RECORDS.validate_json(body) if is_array else [RECORD.validate_json(body)]
    except ValidationError as exc:
        raise _validation_error(exc, array=is_array) from None
    _check_count(len(records), max_batch)
    return records


def _decode_ndjson(body: bytes, max_batch: int) -> list[Record]:
    lines = [line for line in body.split(b"\n") if line.strip()]
    _check_count(len(lines), max_batch)
    records, details = [], []
    for index, line in enumerate(lines):
        try:
            records.append(RECORD.validate_json(line))
        except ValidationError as exc:
            if _is_json_error(exc):
                raise ApiError(400, "bad_json", f"record {index} is not valid JSON", [
                    {"index": index, "message": exc.errors()[0]["msg"]}
                ]) from None
            details.extend(_details(exc, index))
    if details:
        raise _invalid(details)
    return records


def _check_count(count: int, max_batch: int) -> None:
    if count > max_batch:
        raise ApiError(
            422, "too_many_records",
            f"{count} records in one request; server.max_batch is {max_batch}",
        )


def _is_json_error(exc: ValidationError) -> bool:
    return any(e["type"] == "json_invalid" for e in exc.errors())


def _validation_error(exc: ValidationError, array: bool) -> ApiError:
    if _is_json_error(exc):
        msg = exc.errors()[0]["msg"]
        return ApiError(400, "bad_json", f"body is not valid JSON: {msg}")
    details = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = list(error["loc"])
        index = loc.pop(0) if array and loc and isinstance(loc[0], int) else 0
        details.append(_detail(index, loc, error["msg"], error["type"]))
    return _invalid(details)


def _details(exc: ValidationError, index: int) -> list[dict[str, Any]]:
    return [
        _detail(index, list(e["loc"]), e["msg"], e["type"])
        for e in exc.errors(include_url=False, include_input=False)
    ]


def _detail(index: Any, loc: list[Any], message: str, kind: str) -> dict[str, Any]:
    return {"index": index, "field": ".".join(str(p) for p in loc), "message": message, "type": kind}


def _invalid(details: list[dict[str, Any]]) -> ApiError:
    first = details[0]
    where = f"record {first['index']}" + (f", field {first['field']}" if first["field"] else "")
    return ApiError(
        422, "validation_failed", f"{len(details)} problem(s); first: {where}: {first['message']}",
        details[:MAX_DETAILS],
    )


# -- routes -------------------------------------------------------------------------------------


async def post_events(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    if service.stopping:
        raise _unavailable("shutting_down", "dispatchd is shutting down", RETRY_AFTER_STOPPING)
    content_type = _media_type(request)
    wait = _wait_timeout(request)
    body = await _read_body(request, service.config.server.read_timeout)
    records = decode_records(body, content_type, service.config.server.max_batch)
    try:
        seqs = await service.ingest(records)
    except SpoolFull as exc:
        raise _unavailable("spool_full", str(exc), RETRY_AFTER_FULL) from None
    except SpoolUnavailable as exc:
        raise _unavailable("spool_unavailable", str(exc), RETRY_AFTER_FULL) from None
    answer: dict[str, Any] = {"accepted": len(records), "ids": [r.id for r in records]}
    if wait is None or not records:
        return json_response(answer, status=202)
    answer["delivery"] = await service.wait_delivered(records, seqs, wait)
    # 200: every dispatcher has them. 202: still accepted and durable, but not (all) delivered.
    done = all(d["status"] == "delivered" for d in answer["delivery"].values())
    return json_response(answer, status=200 if done else 202)


def _media_type(request: web.Request) -> str:
    """``application/json`` or ``application/x-ndjson`` in UTF-8, else 415."""
    try:
        content_type, charset = request.content_type, request.charset
    except Exception:  # the stdlib header parser raises IndexError and friends on some junk
        raise ApiError(415, "unsupported_media_type", "the Content-Type header cannot be parsed",
                       [{"field": "Content-Type", "message": "unparsable"}]) from None
    if content_type not in (JSON, NDJSON):
        raise ApiError(
            415, "unsupported_media_type",
            f"content type {content_type!r} is not accepted; use {JSON} or {NDJSON}",
        )
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise ApiError(415, "unsupported_media_type", f"charset {charset!r}; only utf-8 is accepted")
    return content_type


async def _read_body(request: web.Request, timeout: float) -> bytes:
    try:
        if request.content.is_eof():  # all of it is here already: no timer to arm and cancel
            return await request.read()
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise ApiError(408, "request_timeout", "the request body did not arrive in time") from None
    except web.RequestPayloadError as exc:  # e.g. a Content-Encoding that does not decode
        raise ApiError(400, "bad_body", f"the request body cannot be read: {exc}") from None


def _wait_timeout(request: web.Request) -> float | None:
    """``?wait=delivered[&timeout=S]``: how long to wait for delivery, or ``None``."""
    wait = request.query.get("wait")
    if wait is None:
        if "timeout" in request.query:
            raise ApiError(422, "invalid_parameter", "timeout only applies with wait=delivered",
                           [{"field": "timeout", "message": "given without wait"}])
        return None
    if wait != "delivered":
        raise ApiError(422, "invalid_parameter", "wait must be 'delivered'",
                       [{"field": "wait", "message": f"got {wait!r}"}])
    raw = request.query.get("timeout", str(DEFAULT_WAIT))
    try:
        timeout = float(raw)
    except ValueError:
        timeout = -1.0
    if not 0 < timeout <= MAX_WAIT:
        raise ApiError(422, "invalid_parameter", f"timeout must be in (0, {MAX_WAIT:g}] seconds",
                       [{"field": "timeout", "message": f"got {raw!r}"}])
    return timeout


def _unavailable(code: str, message: str, retry_after: int) -> ApiError:
    return ApiError(503, code, message, headers={"Retry-After": str(retry_after)})


async def get_dispatchers(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return json_response({"dispatchers": await service.dispatcher_status()})


async def get_dead_letters(request: web.Request) -> web.Response:
    """Stored dead letters, oldest first: ``?dispatcher=&after=<id>&limit=``."""
    spool = request.app[SERVICE].spool
    after = _int_param(request, "after", 0, 0, 2**62)
    limit = _int_param(request, "limit", 100, 1, 1000)
    letters = await spool.dead_letters(request.query.get("dispatcher"), after, limit)
    return json_response({"dead_letters": [
        {"id": d.id, "dispatcher": d.dispatcher, "seq": d.row.seq, "error": d.error,
         "attempts": d.attempts, "failed_at": d.failed_at, "record": json.loads(d.row.body)}
        for d in letters
    ]})


async def replay_dead_letters(request: web.Request) -> web.Response:
    name = _dispatcher_param(request)
    try:
        replayed = await request.app[SERVICE].replay_dead_letters(name)
    except SpoolFull as exc:
        raise _unavailable("spool_full", str(exc), RETRY_AFTER_FULL) from None
    return json_response({"dispatcher": name, "replayed": replayed})


async def purge_dead_letters(request: web.Request) -> web.Response:
    name = _dispatcher_param(request)
    purged = await request.app[SERVICE].spool.purge_dead_letters(name)
    return json_response({"dispatcher": name, "purged": purged})


def _dispatcher_param(request: web.Request) -> str:
    name = request.query.get("dispatcher")
    if not name:
        raise ApiError(422, "invalid_parameter", "?dispatcher=<name> is required",
                       [{"field": "dispatcher", "message": "missing"}])
    return name


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(422, "invalid_parameter", f"{name} must be an integer {low}..{high}",
                       [{"field": name, "message": f"got {raw!r}"}])
    return value


async def get_config(request: web.Request) -> web.Response:
    return json_response(request.app[SERVICE].config_status())


async def post_reload(request: web.Request) -> web.Response:
    """Reload now (coalesced with any reload already asked for) and answer with its result."""
    result = await request.app[SERVICE].reloader.request("POST /v1/config/reload")
    if not result.ok:
        raise ApiError(422, "invalid_config", result.error or "reload failed", result.problems)
    changes = result.plan
    return json_response({
        "generation": result.generation,
        "started": list(changes.start), "stopped": list(changes.stop),
        "restarted": list(changes.restart), "restart_required": list(changes.restart_required),
    })


async def get_openapi(request: web.Request) -> web.Response:
    return json_response(openapi.document())


async def get_metrics(request: web.Request) -> web.Response:
    body = await request.app[SERVICE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    problems = request.app[SERVICE].readiness_problems()
    if problems:
        return json_response({"status": "unavailable", "problems": problems}, status=503)
    return json_response({"status": "ready"})


# -- middlewares --------------------------------------------------------------------------------


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error, ours or aiohttp's, in the one error shape."""
    try:
        return await handler(request)
    except ApiError as exc:
        if request.path == f"{API_PREFIX}/events":
            request.app[SERVICE].counters.rejected[exc.code] += 1
        response = json_response(exc.body(), status=exc.status, headers=exc.headers)
        if exc.status == 408:
            response.force_close()  # the rest of that body is never coming: drop the connection
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        error = ApiError(exc.status, code, exc.text or exc.reason)
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return json_response(error.body(), status=exc.status, headers=headers)
    except Exception:  # a bug: logged with its traceback, answered in the one error shape
        log.exception("unexpected error handling %s %s", request.method, request.path)
        error = ApiError(500, "internal_error", "internal error; see the daemon's log")
        return json_response(error.body(), status=500)


def auth_middleware(tokens: tuple[str, ...], metrics_public: bool) -> Middleware:
    """Bearer-token check on ``/v1`` routes (and ``/metrics`` unless public), in constant time.

    ``/healthz`` and ``/readyz`` are always open. Installed only when there are tokens.
    """
    encoded = [t.encode() for t in tokens]

    def guarded(path: str) -> bool:
        return path.startswith(API_PREFIX + "/") or (path == "/metrics" and not metrics_public)

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if guarded(request.path):
            given = request.headers.get("Authorization", "")
            scheme, _, token = given.partition(" ")
            ok = scheme.lower() == "bearer" and _any_equal(token.strip().encode(), encoded)
            if not ok:
                raise ApiError(
                    401, "unauthorized", "a valid bearer token is required",
                    headers={"WWW-Authenticate": 'Bearer realm="dispatchd"'},
                )
        return await handler(request)

    return check


def _any_equal(given: bytes, tokens: list[bytes]) -> bool:
    # Compare against every token so that timing does not reveal which one nearly matched.
    return sum(hmac.compare_digest(given, token) for token in tokens) > 0


def make_app(service: Service) -> web.Application:
    server = service.config.server
    middlewares: list[Middleware] = [error_middleware]
    if tokens := server.tokens():  # tokens are read once, at start-up; each layer costs a call
        middlewares.append(auth_middleware(tokens, server.metrics_public))
    app = web.Application(client_max_size=server.max_body_bytes, middlewares=middlewares)
    app[SERVICE] = service
    app.router.add_post(f"{API_PREFIX}/events", post_events)
    app.router.add_get(f"{API_PREFIX}/dispatchers", get_dispatchers)
    app.router.add_get(f"{API_PREFIX}/config", get_config)
    app.router.add_get(f"{API_PREFIX}/openapi.json", get_openapi)
    app.router.add_get(f"{API_PREFIX}/dead-letters", get_dead_letters)
    app.router.add_delete(f"{API_PREFIX}/dead-letters", purge_dead_letters)
    app.router.add_post(f"{API_PREFIX}/dead-letters/replay", replay_dead_letters)
    app.router.add_post(f"{API_PREFIX}/config/reload", post_reload)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", get_metrics)
    return app
