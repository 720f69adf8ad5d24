"""The real ``dispatchd`` process for black-box tests: start on a free port, talk HTTP, kill."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp

from . import TESTPLUGINS
from .config import config_data, merge, write_config

DISPATCHD = Path(sys.executable).parent / "dispatchd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def ready(url: str, timeout: float, gone: Callable[[], str | None] = lambda: None,
                ssl: Any = True, interval: float = 0.05) -> bool:
    """Poll ``url``/readyz until it answers 200 (True) or ``timeout`` passes (False); ``gone``
    says why the server's process has ended, raised as ``RuntimeError``."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl)) as session:
        while time.monotonic() < deadline:
            if (why := gone()) is not None:
                raise RuntimeError(why)
            try:
                async with session.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        return True
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(interval)
    return False


class Daemon:
    """One data directory and config; ``start`` can be called again after a stop or a kill.

    Each keyword is a config table (``server={...}``, ``dispatchers={"message": {...}}``) merged
    over the test defaults of ``tests.support.config.config_data``.
    """

    def __init__(self, tmp: Path, enabled: Iterable[str], **sections: Any) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp / "dispatchd.toml"
        self.sections = sections
        self.write_config(enabled)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "daemon.log"

    def write_config(self, enabled: Iterable[str], **sections: Any) -> None:
        """Rewrite the config file: the defaults, the constructor's tables, then these tables."""
        data = config_data(self.tmp, enabled, self.port, **self.sections)
        write_config(self.config, merge(data, sections))

    async def start(self, timeout: float = 20.0, ssl: Any = True) -> None:
        path = os.pathsep.join(filter(None, [str(TESTPLUGINS), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(DISPATCHD), "serve", "-c", str(self.config)], stdout=log, stderr=log, env=env
            )
        proc = self.proc

        def gone() -> str | None:
            code = proc.poll()
            return None if code is None else f"dispatchd exited with {code}:\n{self.logs()}"

        if not await ready(self.url, timeout, gone, ssl=ssl):
            raise TimeoutError(f"dispatchd not ready after {timeout}s:\n{self.logs()}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # -- what the daemon says ----------------------------------------------------------------

    async def dispatchers(self, session: aiohttp.ClientSession) -> dict[str, dict[str, Any]]:
        """``GET /v1/dispatchers``: each dispatcher's status entry by name."""
        async with session.get(self.url + "/v1/dispatchers") as resp:
            assert resp.status == 200, await resp.text()
            return {d["name"]: d for d in (await resp.json())["dispatchers"]}

    # -- what the sinks hold ---------------------------------------------------------------

    def db_rows(self) -> list[sqlite3.Row]:
        path = self.tmp / "events.db"
        if not path.exists():
            return []
        with sqlite3.connect(path) as db:
            db.row_factory = sqlite3.Row
            try:
                return list(db.execute("SELECT * FROM event"))
            except sqlite3.OperationalError:
                return []

    def lines(self, name: str) -> list[str]:
        path = self.tmp / name
        return path.read_text().splitlines() if path.exists() else []


async def post(session: aiohttp.ClientSession, url: str, body: Any, **kwargs: Any) -> tuple[int, Any]:
    """POST JSON data (or raw bytes with ``headers``) to ``url``; returns status and decoded body."""
    if isinstance(body, bytes | str):
        async with session.post(url, data=body, **kwargs) as resp:
            return resp.status, await resp.json()
    async with session.post(url, json=body, **kwargs) as resp:
        return resp.status, await resp.json()


async def eventually(
    check: Callable[[], Any | Awaitable[Any]], timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Wait until ``check()`` (a plain or an async callable) is truthy and return that value;
    fail with its last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)
