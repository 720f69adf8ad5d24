"""Slow clients and idle connections are bounded: the real daemon against raw sockets."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from .conftest import record
from .daemon import Daemon, post

pytestmark = pytest.mark.integration


@pytest.fixture
async def daemon(tmp_path, request):
    idle = getattr(request, "param", 0.5)
    daemon = Daemon(tmp_path, ["database"])
    daemon.config.write_text(daemon.config.read_text().replace(
        "[server]", f"[server]\nidle_timeout = {idle}\nread_timeout = 0.5\nmax_connections = 3"))
    await daemon.start()
    yield daemon
    daemon.kill()


async def shut(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def closed_by_server(reader: asyncio.StreamReader, within: float = 5.0) -> bytes:
    """Everything the server sent until it closed the connection (fails if it never does)."""
    try:
        return await asyncio.wait_for(reader.read(), within)
    except ConnectionResetError:  # closed by abort rather than by FIN
        return b""


async def test_a_silent_connection_is_closed(daemon):
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    assert await closed_by_server(reader) == b""
    await shut(writer)


async def test_a_body_that_never_finishes_gets_408(daemon):
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    writer.write(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{\"level\": ")
    await writer.drain()
    answer = await closed_by_server(reader)
    assert answer.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in answer
    await shut(writer)


@pytest.mark.parametrize("daemon", [30.0], indirect=True)  # held connections must not idle out
async def test_connections_beyond_the_cap_are_closed_and_the_daemon_recovers(daemon):
    held = [await asyncio.open_connection("127.0.0.1", daemon.port) for _ in range(3)]
    await asyncio.sleep(1.0)  # the daemon has accepted all three (a busy machine is slow)
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await closed_by_server(reader, within=2) == b""  # refused: nothing answered
    await shut(writer)
    for _, held_writer in held:
        await shut(held_writer)
    await asyncio.sleep(0.2)
    async with aiohttp.ClientSession() as session:
        assert (await post(session, daemon.url + "/v1/events", record()))[0] == 202
    assert "connection limit 3 reached" in daemon.logs()
