"""Typed errors raised at the boundaries, each mapped to one HTTP status and error code."""

from __future__ import annotations

from typing import Any


class DispatchdError(Exception):
    """Base of every error dispatchd raises on purpose."""


class ConfigError(DispatchdError):
    """The configuration file is unreadable or invalid; ``problems`` name each bad key."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class PluginError(DispatchdError):
    """A dispatcher plugin could not be found, imported, validated or configured."""


class Unavailable(DispatchdError):
    """Raised by a dispatcher whose sink cannot be reached right now (broker down, refused).

    The worker backs off and retries the same records without spending their attempts, so an
    outage grows this dispatcher's backlog in the spool instead of filling its dead letters.
    """


class SpoolFull(DispatchdError):
    """The spool holds ``spool.max_events`` records; ingest must wait."""


class SpoolUnavailable(DispatchdError):
    """The spool could not commit (disk full, I/O error, closed)."""


class ApiError(DispatchdError):
    """An error answered over HTTP with the one error shape of DESIGN.md."""

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
