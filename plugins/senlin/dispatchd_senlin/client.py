"""One POST of a batch to dispatchd, standard library only, and what its answer means."""

from __future__ import annotations

import email.utils
import http.client
import json
import ssl
import time
from typing import Any, NamedTuple
from urllib.parse import urlsplit

try:
    from importlib.metadata import version

    AGENT = f"dispatchd-senlin/{version('dispatchd-senlin')}"
except Exception:  # not installed as a distribution (run from a source tree)
    AGENT = "dispatchd-senlin"
EVENTS = "/v1/events"
RETRY = frozenset({408, 425, 429})  # and every 5xx: nothing was stored, try again later


class Answer(NamedTuple):
    """``status`` None: no answer (unreachable, timed out); ``error`` says why."""

    status: int | None
    body: bytes = b""
    retry_after: float | None = None
    error: str = ""

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRY or self.status >= 500

    def problem(self) -> dict[str, Any]:
        """dispatchd's ``{"error": {"code", "message", "details"}}``, or what there is of it."""
        try:
            error = json.loads(self.body)["error"]
            return error if isinstance(error, dict) else {}
        except (ValueError, KeyError, TypeError):
            return {}

    def kind(self) -> str:
        """``401 unauthorized``, ``422 validation_failed``: what a log line is said once per."""
        return f"{self.status} {self.problem().get('code', '')}".strip()

    def describe(self) -> str:
        if self.status is None:
            return self.error
        text = self.body[:2000].decode("utf-8", "replace").strip()
        return f"HTTP {self.status}: {text}" if text else f"HTTP {self.status}"


class Client:
    """POSTs JSON arrays of already encoded records to ``<url>/v1/events``."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 10.0,
                 ca_file: str | None = None) -> None:
        self.url = url
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port
        self.path = parts.path.rstrip("/") + EVENTS
        self.timeout = timeout
        self.ssl = ssl.create_default_context(cafile=ca_file) if self.https else None
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": AGENT,
        }
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def post(self, encoded: list[bytes]) -> Answer:
        """One request with a fresh connection (a kept-alive one may be stale after a restart)."""
        body = b"[" + b",".join(encoded) + b"]"
        conn = self._connection()
        try:
            conn.request("POST", self.path, body=body, headers=self.headers)
            resp = conn.getresponse()
            data = resp.read()
            return Answer(resp.status, data, _retry_after(resp.getheader("Retry-After")))
        except (OSError, http.client.HTTPException) as exc:
            return Answer(None, error=f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc))
        finally:
            conn.close()

    def _connection(self) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                               context=self.ssl)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delay-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
