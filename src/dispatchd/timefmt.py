"""The one time format of the API, the logs and the CLI: RFC 3339 in UTC with a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(moment: float | datetime) -> str:
    """``2026-12-02T18:30:00.123456Z`` for an epoch time or an aware datetime."""
    if isinstance(moment, datetime):
        moment = moment.timestamp()
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="microseconds")[:-6] + "Z"
