"""Slow clients and idle connections are bounded: the real daemon against raw sockets."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from .support.daemon import Daemon, eventually, post
from .support.records import record


@pytest.fixture
async def daemon(tmp_path, request):
    idle = getattr(request, "param", 0.5)
    daemon = Daemon(tmp_path, ["database"], server={
        "idle_timeout": idle, "read_timeout": 0.5, "max_connections": 3})
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


async def hold(port: int, count: int, timeout: float = 20.0) -> list[tuple[asyncio.StreamReader,
                                                                      asyncio.StreamWriter]]:
    """``count`` open connections, each answered once: the daemon has accepted them all. One it
    closed at once (a connection of an earlier client not yet gone still counted) is opened again."""
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(held) < count:
        assert asyncio.get_running_loop().time() < deadline, f"only {len(held)} connections held"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        if (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 200"):
            held.append((reader, writer))
        else:
            await shut(writer)
            await asyncio.sleep(0.05)  # poll interval until the earlier connection is gone
    return held


@pytest.mark.parametrize("daemon", [30.0], indirect=True)  # held connections must not idle out
async def test_connections_beyond_the_cap_are_closed_and_the_daemon_recovers(daemon):
    held = await hold(daemon.port, 3)
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await closed_by_server(reader, within=2) == b""  # refused: nothing answered
    await shut(writer)
    for _, held_writer in held:
        await shut(held_writer)
    async with aiohttp.ClientSession() as session:

        async def accepted() -> bool:  # once the daemon has seen the held connections go
            try:
                return (await post(session, daemon.url + "/v1/events", record()))[0] == 202
            except aiohttp.ClientConnectionError:
                return False

        await eventually(accepted, timeout=10)
    assert "connection limit 3 reached" in daemon.logs()
