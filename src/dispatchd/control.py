"""Talking to a running daemon from the command line, over its own HTTP API."""

from __future__ import annotations

from typing import Any

import aiohttp

from .config import ServerConfig
from .errors import DispatchdError

# A daemon listening on every address is reached on loopback.
_ANY = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def base_url(server: ServerConfig) -> str:
    host = _ANY.get(server.host, server.host)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{server.port}"


async def post_reload(server: ServerConfig, timeout: float) -> tuple[int, dict[str, Any]]:
    """POST /v1/config/reload; returns the status and the decoded body."""
    headers = {"Authorization": f"Bearer {server.auth_tokens[0]}"} if server.auth_tokens else {}
    url = base_url(server) + "/v1/config/reload"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.post(url, headers=headers) as resp:
                body: dict[str, Any] = await resp.json()
                return resp.status, body
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DispatchdError(f"cannot reach dispatchd at {url}: {exc}") from None
