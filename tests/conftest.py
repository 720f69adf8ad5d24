"""Shared fixtures: records, config text, the test plugins on the path, the real daemon."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

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


_EXIT: list[int] = []


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    _EXIT.append(int(exitstatus))


def pytest_unconfigure(config: Any) -> None:
    # A stray aiosqlite connection thread (not daemonic) left by some test keeps the interpreter
    # from exiting after a green run; until it is found, leave once pytest has reported.
    if _EXIT:
        import os
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT[0])
