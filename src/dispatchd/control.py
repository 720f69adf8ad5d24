"""Talking to a running daemon from the command line, over its own HTTP API.

The daemon is found through its spool's lock file, where it publishes the address it listens
on: a ``server.port`` edited since it started does not send the CLI astray. Without a running
holder the config's address is tried, and every failure says which address and why that one.
"""

from __future__ import annotations

import os
import ssl
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import ValidationError

from . import config
from .config import ServerConfig, SpoolConfig
from .errors import ConfigError, DispatchdError, Problem
from .lock import read_holder


class Unreachable(DispatchdError):
    """No answer from the daemon; the message names the address tried and why that one."""


class ServerError(DispatchdError):
    """The daemon answered with its error shape: ``{"error": {"code", "message", "details"}}``."""

    def __init__(self, status: int, code: str, message: str, details: list[Any]) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True)
class Settings:
    """What the CLI needs of a config file to reach the daemon, and what else was wrong in it."""

    server: ServerConfig
    spool: SpoolConfig
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """The address to call, and in words how it was chosen (for messages)."""

    url: str
    origin: str
    pid: int | None = None


def settings(path: str) -> Settings:
    """The ``[server]`` and ``[spool]`` sections of the file at ``path``.

    A problem elsewhere in the file (the very edit a reload is about to reject) is kept in
    ``problems`` rather than raised: the daemon can still be found and asked.
    """
    try:
        whole = config.load(path)
    except ConfigError as exc:
        full = exc
    else:
        return Settings(whole.server, whole.spool)
    raw = _toml(path, full)
    try:
        server = ServerConfig.model_validate(config.expand_env(raw.get("server", {}), "server"))
        spool = SpoolConfig.model_validate(config.expand_env(raw.get("spool", {}), "spool"))
    except (ValidationError, ConfigError):
        raise full from None
    return Settings(server, spool, full.problems)


def _toml(path: str, error: ConfigError) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise error from None


def config_url(server: ServerConfig) -> str:
    """The daemon's URL according to ``[server]``."""
    return server.url()


def locate(found: Settings) -> Target:
    """Where the daemon using this config's spool listens: its lock file, else the config."""
    spool = os.path.abspath(found.spool.path)
    holder = read_holder(spool)
    fallback = config_url(found.server)
    if holder is None:
        return Target(fallback, f"no running dispatchd holds spool {spool}, "
                                "so tried the address in the config")
    if not holder.url:
        return Target(fallback, f"dispatchd pid {holder.pid} holds spool {spool} but has not "
                                "published its address yet, so tried the address in the config",
                      holder.pid)
    origin = f"dispatchd pid {holder.pid} holds spool {spool} and published its address"
    return Target(holder.url, origin, holder.pid)


class Client:
    """Requests to one daemon, authenticated with the config's first token."""

    def __init__(self, found: Settings, target: Target) -> None:
        self.settings = found
        self.target = target

    async def request(
        self, method: str, path: str, timeout: float = 10.0,
        params: dict[str, str] | list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        """The decoded JSON body of a 2xx answer; ``ServerError`` for the error shape."""
        url = self.target.url + path
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
                async with session.request(method, url, headers=self._headers(), params=params,
                                           ssl=_tls(self.settings.server)) as resp:
                    body = await _json(resp)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unreachable(f"{self.target.origin}: {self.target.url} — {_reason(exc, timeout)}") \
                from None
        if resp.status >= 400:
            raise _server_error(resp.status, body)
        return body

    def _headers(self) -> dict[str, str]:
        try:
            tokens = self.settings.server.tokens()
        except OSError as exc:
            raise DispatchdError(f"cannot read server.auth_tokens_file: {exc}") from None
        return {"Authorization": f"Bearer {tokens[0]}"} if tokens else {}


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await resp.json(content_type=None)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise aiohttp.ClientPayloadError(
            f"answered HTTP {resp.status} without a JSON object: is this dispatchd?")
    return body


def _server_error(status: int, body: dict[str, Any]) -> ServerError:
    error = body.get("error")
    if not isinstance(error, dict):
        return ServerError(status, "unknown", f"HTTP {status}: {body}", [])
    details = error.get("details")
    return ServerError(status, str(error.get("code", "unknown")),
                       str(error.get("message", f"HTTP {status}")),
                       details if isinstance(details, list) else [])


def _reason(exc: BaseException, timeout: float) -> str:
    """Why a request failed, in the fewest words (``connection refused``)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError) and not isinstance(exc, aiohttp.ClientSSLError):
        # asyncio words every failed connect "Connect call failed (address)": the errno says why.
        code = exc.os_error.errno
        return os.strerror(code).lower() if code else str(exc.os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the connection closed before an answer"
    return str(exc) or type(exc).__name__


def _tls(server: ServerConfig) -> ssl.SSLContext | bool:
    if not server.tls_cert:
        return True
    # The daemon's own certificate is what we trust; we reach it by address, not by name.
    context = ssl.create_default_context(cafile=server.tls_cert)
    context.check_hostname = False
    return context
