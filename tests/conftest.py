"""Shared fixtures: records, config text, the test plugins on the path, the real daemon."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatchd import sqlite

TESTPLUGINS = Path(__file__).parent / "testplugins"
if str(TESTPLUGINS) not in sys.path:
    # In-process tests discover the test plugins' entry points through this dist-info.
    sys.path.insert(0, str(TESTPLUGINS))


def record(**overrides: Any) -> dict[str, Any]:
    """A valid API v1 record as JSON data; keys given replace the defaults."""
    body: dict[str, Any] = {
        "level": "INFO",
        "phase": "end",
        "reason": "Cluster scaled out",
        "extra": {"count": 2},
        "action": {
            "id": "a-1",
            "name": "scale_out_web",
            "action": "CLUSTER_SCALE_OUT",
            "cause": "RPC Request",
            "status": "SUCCEEDED",
            "user": "user-1",
            "project": "project-1",
            "inputs": {"count": 2},
            "entity": {"type": "CLUSTER", "id": "c-1", "name": "web", "status": "ACTIVE"},
        },
    }
    body.update(overrides)
    return body


def config_text(tmp: Path, enabled: list[str], port: int = 0, extra: str = "") -> str:
    """A config for ``tmp`` with the given dispatchers enabled and fast retries."""
    return f"""
[server]
host = "127.0.0.1"
port = {port}
shutdown_timeout = 5.0

[spool]
path = "{tmp}/spool.db"

[dispatch]
enabled = {enabled!r}
level = "DEBUG"
backoff_initial = 0.05
backoff_max = 0.2
max_attempts = 3
timeout = 5.0

[dispatchers.database]
url = "sqlite:///{tmp}/events.db"

[dispatchers.jsonfile]
path = "{tmp}/events.jsonl"

[dispatchers.flaky]
path = "{tmp}/flaky.jsonl"
fail_file = "{tmp}/flaky.down"

[dispatchers.slow]
path = "{tmp}/slow.txt"
{extra}
"""


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
