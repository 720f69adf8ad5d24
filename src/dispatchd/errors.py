"""Typed errors dispatchd raises on purpose; the HTTP layer maps each to one status and code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class DispatchdError(Exception):
    """Base of every error dispatchd raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file: where (``loc``, a key path) and what (``msg``)."""

    loc: tuple[str | int, ...]
    msg: str

    def __str__(self) -> str:
        where = ".".join(str(part) for part in self.loc)
        return f"{where or '(top level)'}: {self.msg}"

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg}


class ConfigError(DispatchdError):
    """The configuration file is unreadable or invalid; ``problems`` name each bad key."""

    def __init__(self, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(str(p) for p in problems))


class PluginError(DispatchdError):
    """A dispatcher plugin could not be found, imported, validated or configured."""


class Unavailable(DispatchdError):
    """Raised by a dispatcher whose sink cannot be reached right now (broker down, refused).

    The worker backs off and retries the same records without spending their attempts, so an
    outage grows this dispatcher's backlog in the spool instead of filling its dead letters.
    ``retry_after`` (seconds), when given, replaces the backoff before the next try.
    """

    def __init__(self, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SpoolFull(DispatchdError):
    """The spool holds ``spool.max_events`` records; ingest must wait."""


class SpoolUnavailable(DispatchdError):
    """The spool could not commit (disk full, I/O error, closed)."""


class SpoolLowSpace(SpoolUnavailable):
    """The spool's filesystem has less free space than ``spool.reserve_bytes``; ingest must wait."""


class SpoolLocked(DispatchdError):
    """Another process holds the spool's lock file."""


class Busy(DispatchdError):
    """Request bodies in flight already use ``server.max_inflight_bytes``; the client retries."""


class Stopping(DispatchdError):
    """The daemon is shutting down and takes no new work."""


class UnknownDispatcher(DispatchdError):
    """A dispatcher name that is neither configured nor holds dead letters."""


class NotEnabled(DispatchdError):
    """The operation needs the dispatcher to be enabled."""


class InvalidQuery(DispatchdError):
    """A query parameter of ``GET /v1/events`` is unknown or has a bad value; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class EventNotFound(DispatchdError):
    """No stored event has that id (or id prefix)."""


class AmbiguousEventId(DispatchdError):
    """More than one stored event starts with that id prefix."""


class NoEventStore(DispatchdError):
    """No enabled dispatcher keeps events that can be queried (the ``database`` dispatcher is off)."""


class StoreUnavailable(DispatchdError):
    """The event store is enabled but cannot answer now (not started yet, server unreachable)."""
