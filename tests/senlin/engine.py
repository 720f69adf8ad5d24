"""Senlin's engine emitting events through ``senlin.engine.event`` with ``event_dispatchers =
dispatchd``, as senlin-engine runs (eventlet monkey-patched first), driven by a JSON plan on stdin.

Plan: ``{"green": true, "dispatchd": {<[dispatchd] options>}, "steps": [...]}``; a step is one of
``{"emit": n, "spec": {<objects.action_of spec>}, "reason": str, "reason_size": int}`` (levels
cycle INFO, WARNING, ERROR, CRITICAL), ``{"until": {"sent": 5}}`` (stats reach these values),
``{"touch": path}``, ``{"await": path}``, ``{"snapshot": name}``.
At exit, after the bridge's own exit flush, prints ``{"ids", "snapshots", "final", "log",
"green"}``: the ids the bridge gave the events, stats, and the bridge's log lines.
"""

from __future__ import annotations

import json
import sys

PLAN = json.load(sys.stdin)
if PLAN.get("green", True):
    import senlin.cmd  # noqa: F401  (eventlet.monkey_patch(os=False), as senlin-engine does)

import atexit  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import objects  # noqa: E402

WAIT = 60.0  # seconds a step may wait for the bridge or the test before the script fails
LEVELS = ("info", "warning", "error", "critical")


class Capture(logging.Handler):
    """The bridge's log lines, as ``[levelname, message]``."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[list[str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append([record.levelname, record.getMessage()])


def configure(options: dict[str, Any]) -> None:
    """senlin.conf with ``event_dispatchers = dispatchd`` and a ``[dispatchd]`` group, read as
    senlin-engine's main() reads its own."""
    from oslo_log import log as oslo_logging
    from senlin.common import config

    lines = ["[DEFAULT]", "event_dispatchers = dispatchd", "use_stderr = true", "[dispatchd]"]
    lines += [f"{key} = {value}" for key, value in options.items()]
    fd, path = tempfile.mkstemp(suffix=".conf")
    with os.fdopen(fd, "w") as conf:
        conf.write("\n".join(lines) + "\n")
    config.parse_args(["senlin-engine", "--config-file", path], "senlin-engine",
                      default_config_files=[])
    os.unlink(path)
    oslo_logging.setup(config.CONF, "senlin-engine")  # to stderr; stdout is the report


def main() -> None:
    capture = Capture()
    log = logging.getLogger("dispatchd_senlin")
    log.setLevel(logging.INFO)
    log.addHandler(capture)
    ids: list[str] = []
    snapshots: dict[str, dict[str, int]] = {}
    state: dict[str, Any] = {}

    def report() -> None:
        # Registered before the bridge exists, so it runs after the bridge's exit flush.
        print(json.dumps({"ids": ids, "snapshots": snapshots, "green": _green(),
                          "final": state["bridge"].stats(), "log": capture.lines}))

    atexit.register(report)
    configure(PLAN.get("dispatchd", {}))
    from dispatchd_senlin import records
    from senlin.engine import event

    record_of = records.record_of

    def spy(level: int, action: Any, **kwargs: Any) -> dict[str, Any]:
        record = record_of(level, action, **kwargs)
        ids.append(record["id"])
        return record

    records.record_of = spy  # the test compares what arrives with the ids the bridge gave
    event.load_dispatcher()
    assert event.dispatchers.names() == ["dispatchd"], event.dispatchers.names()
    bridge = state["bridge"] = event.dispatchers.extensions[0].obj
    for step in PLAN["steps"]:
        run(step, event, bridge, snapshots)


def run(step: dict[str, Any], event: Any, bridge: Any, snapshots: dict[str, Any]) -> None:
    if "emit" in step:
        action = objects.action_of(step.get("spec", {}))
        reason = step.get("reason", "x" * step.get("reason_size", 0) or None)
        for n in range(step["emit"]):
            getattr(event, LEVELS[n % len(LEVELS)])(action, phase="end", reason=reason)
    elif "until" in step:
        want = step["until"]
        _wait(lambda: all(bridge.stats()[k] >= v for k, v in want.items()),
              f"stats to reach {want}: {bridge.stats()}")
    elif "touch" in step:
        Path(step["touch"]).touch()
    elif "await" in step:
        _wait(lambda: Path(step["await"]).exists(), f"{step['await']} to exist")
    elif "snapshot" in step:
        snapshots[step["snapshot"]] = bridge.stats()


def _wait(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"waited {WAIT}s for {what}")
        time.sleep(0.01)  # green under eventlet: the sender runs meanwhile


def _green() -> bool:
    try:
        import eventlet.patcher

        return bool(eventlet.patcher.is_monkey_patched("thread"))
    except ImportError:
        return False


if __name__ == "__main__":
    main()
