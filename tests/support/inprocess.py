"""The service run in-process on port 0, for tests that look inside it while talking HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from dispatchd import config
from dispatchd.service import Service

from .config import config_data, toml_text


@asynccontextmanager
async def run_service(
    tmp: Path, enabled: Iterable[str] = ("database",), **sections: Any
) -> AsyncIterator[tuple[Service, aiohttp.ClientSession, str]]:
    """The service on port 0 with the test config for ``tmp``; each keyword is a config table
    merged over the defaults. Yields the service, a client session and the base URL."""
    service = Service(config.parse(toml_text(config_data(tmp, enabled, **sections))))
    await service.startup()
    try:
        async with aiohttp.ClientSession() as session:
            yield service, session, f"http://127.0.0.1:{service.port}"
    finally:
        await service.shutdown()
