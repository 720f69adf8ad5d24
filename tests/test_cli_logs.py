"""``dispatchd.logs`` in process: the text and JSON formats, and the access log on a real server."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import datetime

import aiohttp
import pytest
from aiohttp import web

from dispatchd import logs

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO |WARNING) +[\w.]+: .+$")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """What ``logs.setup`` writes, with the process's logging put back as it was afterwards."""
    root = logging.getLogger()
    handlers, level, hook = list(root.handlers), root.level, sys.excepthook
    out = io.StringIO()
    yield out
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    sys.excepthook = hook
    logging.captureWarnings(False)
    logging.getLogger(logs.ACCESS_LOGGER).setLevel(logging.NOTSET)


def json_lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_message_dispatcher_and_traceback(stream):
    logs.setup("INFO", "json", stream=stream)
    worker = logging.LoggerAdapter(logging.getLogger("dispatchd.workers"), {"dispatcher": "flaky"})
    worker.error("dispatcher %s: delivery failed: %s", "flaky", "boom\nsecond line")
    try:
        raise RuntimeError("broken")
    except RuntimeError:
        logging.getLogger("dispatchd.core").exception("unexpected")
    logging.getLogger("dispatchd").debug("below the level")

    first, second = json_lines(stream)
    assert set(first) == {"time", "level", "logger", "message", "dispatcher"}
    assert first["level"] == "ERROR" and first["logger"] == "dispatchd.workers"
    assert first["message"] == "dispatcher flaky: delivery failed: boom\nsecond line"
    assert first["dispatcher"] == "flaky"
    assert first["time"].endswith("Z")
    assert datetime.fromisoformat(first["time"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0
    assert "dispatcher" not in second
    assert second["error"].startswith("Traceback") and "RuntimeError: broken" in second["error"]


def test_setup_again_replaces_its_handler_and_keeps_watchfiles_quiet(stream):
    logs.setup("DEBUG", "json", stream=io.StringIO())
    logs.setup("INFO", "text", stream=stream)
    ours = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)
            and getattr(h, "stream", None) is not sys.stderr and h.name == "dispatchd"]
    assert len(ours) == 1
    logging.getLogger("dispatchd.service").info("listening")
    logging.getLogger("dispatchd.service").warning("restart required")
    logging.getLogger("watchfiles.main").info("1 change detected")
    logging.getLogger("dispatchd").debug("not at INFO")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert all(TEXT_LINE.match(line) for line in lines), lines
    assert lines[0].endswith("INFO    dispatchd.service: listening")


def test_every_line_names_the_instance_once_the_config_is_read(stream):
    logs.setup("INFO", "text", stream=stream, instance="dispatchd-1")
    logging.getLogger("dispatchd.service").info("listening")
    logs.setup("INFO", "json", stream=stream, instance="dispatchd-1")
    worker = logging.LoggerAdapter(logging.getLogger("dispatchd.workers"), {"dispatcher": "db"})
    worker.warning("retrying %d%%", 5)
    text, line = stream.getvalue().splitlines()
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} dispatchd-1 INFO    "
                    r"dispatchd.service: listening$", text), text
    assert json.loads(line) | {"time": None} == {
        "time": None, "level": "WARNING", "logger": "dispatchd.workers", "message": "retrying 5%",
        "instance": "dispatchd-1", "dispatcher": "db"}


async def test_access_log_one_line_per_request_in_json(stream):
    logs.setup("WARNING", "json", access=True, stream=stream)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, **logs.runner_options(True))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            for path in ("/hello?x=1", "/missing"):
                async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                    await resp.read()
    finally:
        await runner.cleanup()
    first, second = json_lines(stream)  # WARNING for the rest, yet the access log is on
    assert first["logger"] == logs.ACCESS_LOGGER and first["level"] == "INFO"
    assert first["http"]["method"] == "GET" and first["http"]["path"] == "/hello?x=1"
    assert first["http"]["status"] == 200 and first["http"]["bytes"] > len("hello")
    assert first["http"]["remote"] == "127.0.0.1" and first["http"]["duration_ms"] >= 0
    assert re.match(r"GET /hello\?x=1 200 \d+ bytes [\d.]+ ms 127.0.0.1$", first["message"])
    assert second["http"]["status"] == 404


def test_access_log_off_means_no_access_logger():
    assert logs.runner_options(False) == {"access_log": None}
    on = logs.runner_options(True)
    assert on["access_log_class"] is logs.AccessLogger
    assert on["access_log"].name == logs.ACCESS_LOGGER
