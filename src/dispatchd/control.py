"""Talking to a running daemon from the command line, over its own HTTP API."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp

from .config import ServerConfig
from .errors import DispatchdError

# A daemon listening on every address is reached on loopback.
_ANY = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def base_url(server: ServerConfig) -> str:
    host = _ANY.get(server.host, server.host)
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if server.tls_cert else "http"
    return f"{scheme}://{host}:{server.port}"


def _tls(server: ServerConfig) -> ssl.SSLContext | bool:
    if not server.tls_cert:
        return True
    # The daemon's own certificate is what we trust; we reach it by address, not by name.
    context = ssl.create_default_context(cafile=server.tls_cert)
    context.check_hostname = False
    return context


async def call(
    server: ServerConfig, method: str, path: str, timeout: float = 60.0,
    params: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """One request to the daemon; returns the status and the decoded JSON body."""
    tokens = server.tokens()
    headers = {"Authorization": f"Bearer {tokens[0]}"} if tokens else {}
    url = base_url(server) + path
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.request(method, url, headers=headers, params=params,
                                       ssl=_tls(server)) as resp:
                body: dict[str, Any] = await resp.json()
                return resp.status, body
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise DispatchdError(f"cannot reach dispatchd at {url}: {exc}") from None


async def post_reload(server: ServerConfig, timeout: float) -> tuple[int, dict[str, Any]]:
    return await call(server, "POST", "/v1/config/reload", timeout)
