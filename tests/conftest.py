"""Fixtures for every test: the test plugins on the path, no SQLite connection left open."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatchd import sqlite
from dispatchd.dispatchers.database import DatabaseDispatcher, DatabaseOptions
from dispatchd.spool import Spool

from .support import TESTPLUGINS
from .support.daemon import Daemon

if str(TESTPLUGINS) not in sys.path:
    # In-process tests discover the test plugins' entry points through this dist-info.
    sys.path.insert(0, str(TESTPLUGINS))


# -- no stray SQLite threads ------------------------------------------------------------------------
# Each spool or database connection owns a thread (dispatchd.sqlite). One left open is a leak the
# daemon would carry through every reload; name the test that left it rather than find it later.

LEAK_GRACE = 2.0  # seconds for closes still in flight to let their threads end


def _sqlite_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate()
            if t.is_alive() and t.name.startswith(sqlite.THREAD_PREFIX)}


def _still_running(threads: set[threading.Thread]) -> set[threading.Thread]:
    deadline = time.monotonic() + LEAK_GRACE
    while threads and time.monotonic() < deadline:
        time.sleep(0.02)
        threads = {t for t in threads if t.is_alive()}
    return threads


@pytest.fixture(autouse=True)
def _no_stray_sqlite_threads(request: pytest.FixtureRequest) -> Iterator[None]:
    before = _sqlite_threads()
    yield
    leaked = _still_running(_sqlite_threads() - before)
    if leaked:
        names = ", ".join(sorted(t.name for t in leaked))
        pytest.fail(f"{request.node.nodeid} left {len(leaked)} SQLite connection(s) open "
                    f"({names}); close every connection opened, on error and cancellation paths "
                    "too", pytrace=False)


@pytest.fixture
async def spool(tmp_path):
    """An open spool in the test's directory, closed afterwards (modules may define their own)."""
    s = Spool(tmp_path / "spool.db")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def make_daemon(tmp_path: Path) -> AsyncIterator[Callable[..., Daemon]]:
    """Real ``dispatchd`` processes in the test's directory, killed at the end."""
    made: list[Daemon] = []

    def factory(enabled: list[str], **sections: Any) -> Daemon:
        daemon = Daemon(tmp_path, enabled, **sections)
        made.append(daemon)
        return daemon

    yield factory
    for daemon in made:
        daemon.kill()


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Awaitable[DatabaseDispatcher]]]:
    """Start ``database`` dispatchers for a test and close every one of them afterwards."""
    backends: list[DatabaseDispatcher] = []

    async def start(url: str, **options: Any) -> DatabaseDispatcher:
        backend = DatabaseDispatcher("database", DatabaseOptions(url=url, **options))
        backends.append(backend)
        await backend.start()
        return backend

    yield start
    for backend in backends:
        await backend.close()
