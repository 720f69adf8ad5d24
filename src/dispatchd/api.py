"""The HTTP surface: routes over the dispatch core, and the one error shape for every answer."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.typedefs import Handler, Middleware

from . import openapi, query_api
from .budget import ByteBudget
from .config import ServerConfig
from .constants import API_PREFIX, JSON, NDJSON
from .core import Core
from .decode import decode_records
from .errors import DispatchdError, Stopping
from .http_errors import ApiError, from_domain, json_response
from .metrics import CONTENT_TYPE, Metrics
from .timefmt import rfc3339

log = logging.getLogger(__name__)

DEFAULT_WAIT = 10.0  # seconds ?wait=delivered waits unless ?timeout= says otherwise
MAX_WAIT = 300.0


@dataclass(frozen=True)
class Context:
    """What the handlers serve: the core, the shell's metrics and the in-flight byte budget."""

    core: Core
    metrics: Metrics
    budget: ByteBudget
    server: ServerConfig


CONTEXT: web.AppKey[Context] = web.AppKey("context")


# -- ingest -------------------------------------------------------------------------------------


async def post_events(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    core = ctx.core
    if core.stopping:
        raise Stopping("dispatchd is shutting down")
    content_type = _media_type(request)
    wait = _wait_timeout(request)
    server = ctx.server
    length = request.content_length
    if length is not None and length > server.max_body_bytes:  # before it can hold the budget
        raise web.HTTPRequestEntityTooLarge(server.max_body_bytes, length)
    # The budget is taken before the body is read: a request that waits for it leaves its body
    # in the kernel's socket buffer (aiohttp stops reading), not in the daemon's memory.
    async with ctx.budget.hold(server.max_body_bytes if length is None else length):
        body = await _read_body(request, server.max_body_bytes, server.read_timeout)
        records = decode_records(body, content_type, server.max_batch)
        del body
        seqs = await core.ingest(records)
    answer: dict[str, Any] = {"accepted": len(records), "ids": [r.id for r in records]}
    if wait is None or not records:
        return json_response(answer, status=202)
    # Only counts are kept across the wait: the records themselves are not held meanwhile.
    filtered = core.filtered_counts(records)
    del records
    answer["delivery"] = await core.wait_delivered(seqs[0], seqs[-1], filtered, wait)
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


async def _read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    try:
        if request.content.is_eof():  # all of it is here already: no timer to arm and cancel
            return await _stream_body(request.content, limit)
        async with asyncio.timeout(timeout):
            return await _stream_body(request.content, limit)
    except TimeoutError:
        raise ApiError(408, "request_timeout", "the request body did not arrive in time") from None
    except web.RequestPayloadError as exc:  # e.g. a Content-Encoding that does not decode
        raise ApiError(400, "bad_body", f"the request body cannot be read: {exc}") from None


async def _stream_body(stream: StreamReader, limit: int) -> bytes:
    """The body, read from the stream: ``request.read()`` would keep a copy on the request, which
    an idle keep-alive connection holds until its next request, outside the in-flight budget."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream.iter_any():
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(limit, size)
        chunks.append(chunk)
    return b"".join(chunks)


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


# -- status, dead letters, config ------------------------------------------------------------


async def get_status(request: web.Request) -> web.Response:
    snapshot = await request.app[CONTEXT].core.snapshot()
    return json_response(snapshot.as_dict())


async def get_dispatchers(request: web.Request) -> web.Response:
    snapshot = await request.app[CONTEXT].core.snapshot()
    return json_response({"dispatchers": snapshot.as_dict()["dispatchers"]})


async def get_dead_letters(request: web.Request) -> web.Response:
    """Stored dead letters, oldest first: ``?dispatcher=&after=<id>&limit=``."""
    after = _int_param(request, "after", 0, 0, 2**62)
    limit = _int_param(request, "limit", 100, 1, 1000)
    name = request.query.get("dispatcher")
    letters = await request.app[CONTEXT].core.dead_letters(name, after, limit)
    return json_response({"dead_letters": [
        {"id": d.id, "dispatcher": d.dispatcher, "seq": d.row.seq, "error": d.error,
         "attempts": d.attempts, "failed_at": rfc3339(d.failed_at), "record": json.loads(d.row.body)}
        for d in letters
    ]})


async def replay_dead_letters(request: web.Request) -> web.Response:
    name = _dispatcher_param(request)
    replayed = await request.app[CONTEXT].core.replay_dead_letters(name)
    return json_response({"dispatcher": name, "replayed": replayed})


async def purge_dead_letters(request: web.Request) -> web.Response:
    name = _dispatcher_param(request)
    purged = await request.app[CONTEXT].core.purge_dead_letters(name)
    return json_response({"dispatcher": name, "purged": purged})


def _dispatcher_param(request: web.Request) -> str:
    name = request.query.get("dispatcher")
    if not name:
        raise ApiError(422, "invalid_parameter", "?dispatcher=<name> is required",
                       [{"field": "dispatcher", "message": "missing"}])
    return name


async def get_config(request: web.Request) -> web.Response:
    snapshot = await request.app[CONTEXT].core.snapshot()
    return json_response(snapshot.as_dict()["config"])


async def post_reload(request: web.Request) -> web.Response:
    """Reload now (coalesced with any reload already asked for) and answer with its result."""
    result = await request.app[CONTEXT].core.reloader.request("POST /v1/config/reload")
    if not result.ok:
        raise ApiError(422, "invalid_config", result.error or "reload failed",
                       [p.as_dict() for p in result.problems])
    changes = result.plan
    return json_response({
        "generation": result.generation,
        "started": list(changes.start), "stopped": list(changes.stop),
        "restarted": list(changes.restart), "restart_required": list(changes.restart_required),
    })


async def get_openapi(request: web.Request) -> web.Response:
    return json_response(openapi.document())


async def get_metrics(request: web.Request) -> web.Response:
    body = await request.app[CONTEXT].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    problems = request.app[CONTEXT].core.readiness_problems()
    if problems:
        return json_response({"status": "unavailable", "problems": problems}, status=503)
    return json_response({"status": "ready"})


# -- middlewares --------------------------------------------------------------------------------


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error, ours, the core's or aiohttp's, in the one error shape, and count it."""
    try:
        return await handler(request)
    except DispatchdError as exc:
        error = from_domain(exc)
        if error is None:
            raise
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        error = ApiError(exc.status, code, exc.text or exc.reason, headers=headers)
    except Exception:  # a bug: logged with its traceback, answered in the one error shape
        log.exception("unexpected error handling %s %s", request.method, request.path)
        error = ApiError(500, "internal_error", "internal error; see the daemon's log")
    request.app[CONTEXT].metrics.counters.rejected[error.code] += 1
    response = json_response(error.body(), status=error.status, headers=error.headers)
    if error.status == 408:
        response.force_close()  # the rest of that body is never coming: drop the connection
    return response


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


def make_app(context: Context) -> web.Application:
    server = context.server
    middlewares: list[Middleware] = [error_middleware]
    if tokens := server.tokens():  # tokens are read once, at start-up; each layer costs a call
        middlewares.append(auth_middleware(tokens, server.metrics_public))
    app = web.Application(client_max_size=server.max_body_bytes, middlewares=middlewares)
    app[CONTEXT] = context
    app.router.add_post(f"{API_PREFIX}/events", post_events)
    app.router.add_routes(query_api.routes(context.core))
    app.router.add_get(f"{API_PREFIX}/status", get_status)
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
