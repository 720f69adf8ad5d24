"""RabbitMQ test helpers: the service requirement, a queue bound to an exchange, a TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import pytest

RABBIT_HOST, RABBIT_PORT = "127.0.0.1", 5672
RABBIT_URL = f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/"


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a local service is absent on a developer machine; in CI, fail instead."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        message = f"{name} is not reachable on {host}:{port}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run this test; .ci/run starts the service)")
        pytest.skip(message)


@dataclass
class BoundQueue:
    """An exclusive queue bound with ``#`` to a fresh topic exchange."""

    exchange: str
    queue: aio_pika.abc.AbstractQueue

    async def drain(
        self, want: int | set[str], timeout: float = 30.0
    ) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Messages until ``want`` (a count, or a set of message ids) have arrived, or ``timeout``."""
        got: list[aio_pika.abc.AbstractIncomingMessage] = []
        deadline = asyncio.get_running_loop().time() + timeout

        def missing() -> bool:
            if isinstance(want, int):
                return len(got) < want
            return not want <= {m.message_id for m in got}

        while missing() and asyncio.get_running_loop().time() < deadline:
            message = await self.queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
            else:
                got.append(message)
        return got


@contextlib.asynccontextmanager
async def bound_queue(durable: bool = True) -> AsyncIterator[BoundQueue]:
    require_service("RabbitMQ", RABBIT_HOST, RABBIT_PORT)
    name = f"dispatchd-test-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(RABBIT_URL)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=durable)
        queue = await channel.declare_queue("", exclusive=True)
        await queue.bind(exchange, "#")
        yield BoundQueue(name, queue)
        await exchange.delete()
    finally:
        await connection.close()


class TcpProxy:
    """A loopback TCP proxy to RabbitMQ that a test can cut (connections dropped) and restore."""

    def __init__(
        self, target: tuple[str, int] = (RABBIT_HOST, RABBIT_PORT), tls: ssl.SSLContext | None = None
    ) -> None:
        self.target = target
        self.tls = tls  # terminate TLS here: the client speaks amqps, the broker plain amqp
        self.port = 0
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.flowing = asyncio.Event()  # cleared: bytes are held, as by a stalled broker
        self.flowing.set()

    @property
    def url(self) -> str:
        scheme = "amqps" if self.tls else "amqp"
        return f"{scheme}://guest:guest@localhost:{self.port}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, ssl=self.tls
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening and abort every open connection, as a broker crash would."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()
        for task in list(self._tasks):
            task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer.transport, up_writer.transport}
        self._transports |= pair
        tasks = [asyncio.create_task(_pipe(reader, up_writer, self.flowing)),
                 asyncio.create_task(_pipe(up_reader, writer, self.flowing))]
        self._tasks.update(tasks)
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
            self._tasks.discard(task)
        for transport in pair:
            transport.abort()
            self._transports.discard(transport)


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event
) -> None:
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while data := await reader.read(65536):
            await flowing.wait()
            writer.write(data)
            await writer.drain()
