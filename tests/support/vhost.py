"""A RabbitMQ virtual host of its own for a test: oslo.messaging's fixed names stay isolated.

A default oslo.messaging deployment of Senlin uses exchange ``senlin`` and queues named
``versioned_notifications.<priority>``; tests sharing ``/`` would see each other's queues (and a
queue declared with other arguments makes the next declaration fail). ``rabbitmqctl`` creates and
deletes the vhost; it needs the broker's Erlang cookie, as root on this machine and in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from .amqp import RABBIT_HOST, RABBIT_PORT, require_service


@dataclass(frozen=True)
class Vhost:
    name: str

    @property
    def amqp_url(self) -> str:
        """For aio-pika and dispatchd."""
        return f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/{self.name}"

    @property
    def oslo_url(self) -> str:
        """oslo.messaging's ``transport_url``."""
        return f"rabbit://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/{self.name}"


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def fresh_vhost() -> Iterator[Vhost]:
    """A new vhost guest may use, deleted (with its exchanges and queues) afterwards."""
    require_service("RabbitMQ", RABBIT_HOST, RABBIT_PORT)
    name = f"dispatchd-test-{uuid.uuid4().hex[:8]}"
    try:
        if shutil.which("rabbitmqctl") is None:
            raise FileNotFoundError("rabbitmqctl is not on PATH")
        _ctl("add_vhost", name)
    except (OSError, subprocess.SubprocessError) as exc:
        message = f"cannot create a RabbitMQ vhost with rabbitmqctl: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run this test)")
        pytest.skip(message)
    try:
        _ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield Vhost(name)
    finally:
        _ctl("delete_vhost", name)


@contextlib.asynccontextmanager
async def fresh_vhost_async() -> AsyncIterator[Vhost]:
    """``fresh_vhost`` for async tests: rabbitmqctl runs in a thread, not on the event loop."""
    manager = fresh_vhost()
    vhost = await asyncio.to_thread(manager.__enter__)
    try:
        yield vhost
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)
