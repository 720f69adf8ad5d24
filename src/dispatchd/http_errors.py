"""The one error shape of the HTTP API, how each typed error of the core maps to it, and the
JSON body every answer, error or not, is written as."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic_core import to_json

from .constants import RETRY_AFTER_FULL, RETRY_AFTER_STOPPING
from .errors import (
    AmbiguousEventId,
    Busy,
    ConfigError,
    DispatchdError,
    EventNotFound,
    InvalidQuery,
    NoEventStore,
    NotEnabled,
    SpoolFull,
    SpoolLowSpace,
    SpoolUnavailable,
    Stopping,
    StoreUnavailable,
    UnknownDispatcher,
)


class ApiError(DispatchdError):
    """An error answered over HTTP as ``{"error": {"code", "message", "details"}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


# Most specific first: SpoolLowSpace is a SpoolUnavailable.
_MAPPING: tuple[tuple[type[DispatchdError], int, str, int | None], ...] = (
    (SpoolFull, 503, "spool_full", RETRY_AFTER_FULL),
    (SpoolLowSpace, 503, "spool_low_space", RETRY_AFTER_STOPPING),
    (SpoolUnavailable, 503, "spool_unavailable", RETRY_AFTER_FULL),
    (Busy, 503, "busy", RETRY_AFTER_FULL),
    (Stopping, 503, "shutting_down", RETRY_AFTER_STOPPING),
    (UnknownDispatcher, 404, "unknown_dispatcher", None),
    (NotEnabled, 409, "not_enabled", None),
    (EventNotFound, 404, "event_not_found", None),
    (AmbiguousEventId, 409, "ambiguous_id", None),
    (NoEventStore, 409, "no_event_store", None),
    (StoreUnavailable, 503, "store_unavailable", RETRY_AFTER_FULL),
)


def from_domain(exc: DispatchdError) -> ApiError | None:
    """The HTTP answer for a typed error of the core, or ``None`` if it has none (a bug)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InvalidQuery):
        return ApiError(400, "invalid_parameter", str(exc),
                        [{"field": exc.field, "message": exc.reason}])
    if isinstance(exc, ConfigError):
        return ApiError(422, "invalid_config", str(exc), [p.as_dict() for p in exc.problems])
    for kind, status, code, retry_after in _MAPPING:
        if isinstance(exc, kind):
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
            return ApiError(status, code, str(exc), headers=headers)
    return None


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # pydantic-core's serializer: the 202 of every ingest is built here, several times faster
    # than json.dumps; anything it cannot encode is written as its str(), as before.
    body = to_json(data, fallback=str)
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")
