"""Publishing with publisher confirms as a pipeline: a bounded window of messages in flight.

A batch of messages is written to the channel at once: delivery tags taken in one go, every
frame marshalled into one write, one future per message registered where aiormq settles
confirms. aiormq's ``basic_publish`` costs a task, a lock, a queue put and a marshalling pass per
message, and ``aio_pika.Message`` builds its properties twice: together about 100 us of the core
per message (``bench/baselines.py amqp``). A publisher that costs that much takes the core from
ingest whenever both are busy.

Three more limits of aiormq are worked around here, each measured:

- aiormq queues at most ten outgoing frames per connection; past that, a write waits for the
  writer. Unbounded here; the window bounds it.
- Incoming frames pass through a queue of ten per channel too: a burst of confirms waits for the
  channel's reader a turn per ten frames. Unbounded likewise (the window bounds the confirms).
- A multiple ack schedules one callback per outstanding delivery tag up to it, again for each ack
  read in the same turn: quadratic in the window (about 25 callbacks per message with 1,000 in
  flight, a fifth of the publisher's CPU). Replaced, on our channel only, by one pass.

All of it relies on aiormq's internals (``Channel.delivery_tag``, ``confirmations``,
``message_id_delivery_tag``, ``write_queue``); ``tests/test_message_pipeline.py`` checks them,
so an aiormq that moves them fails the tests instead of publishing wrongly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import aiormq
from aio_pika.exceptions import DeliveryError, PublishError
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.frame import marshal
from pamqp.header import ContentHeader

from dispatchd import Unavailable


class Outgoing(NamedTuple):
    """One AMQP message to publish: where to, its body and properties, and the events it holds."""

    key: str
    body: bytes
    properties: spec.Basic.Properties
    events: int = 1

    @property
    def id(self) -> str:
        """The message id, by which aiormq finds a returned message's delivery tag."""
        return self.properties.message_id or ""


Returned = Callable[[Outgoing], None]


class Window:
    """Messages published and not yet confirmed, bounded by count and by body bytes."""

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count, self.max_bytes = max_count, max_bytes
        self.count = self.bytes = 0
        self.peak = 0  # the most messages in flight at once
        self._since = 0.0  # the last confirm, or the first publish into an empty window
        self._room = asyncio.Event()
        self._open = True

    def _fits(self, size: int) -> bool:
        if not self._open or self.count == 0:  # a message over the byte bound travels alone
            return True
        return self.count < self.max_count and self.bytes + size <= self.max_bytes

    async def admit(self, sizes: Sequence[int]) -> int:
        """Wait for room, then take in as many of ``sizes``, in order, as fit: one at least."""
        while not self._fits(sizes[0]):
            self._room.clear()
            await self._room.wait()
        if self.count == 0:
            self._since = time.monotonic()
        taken = 0
        for size in sizes:
            if taken and not self._fits(size):
                break
            self.count += 1
            self.bytes += size
            taken += 1
        self.peak = max(self.peak, self.count)
        return taken

    def leave(self, size: int) -> None:
        self.count -= 1
        self.bytes -= size
        self._since = time.monotonic()
        self._room.set()

    def close(self) -> None:
        """Let every waiter through: the channel is gone, its publishes fail at once."""
        self._open = False
        self._room.set()

    def stalled_for(self) -> float:
        """Seconds since the last confirm while messages wait for one; 0 with none in flight."""
        return time.monotonic() - self._since if self.count else 0.0


class Confirms:
    """Publishes to one exchange on one confirming channel; every message gets a future."""

    def __init__(self, channel: aiormq.abc.AbstractChannel, exchange: str, window: Window,
                 returned: Returned) -> None:
        if not isinstance(channel, aiormq.Channel):
            raise TypeError(f"an aiormq channel is needed, not {type(channel).__name__}")
        self._channel, self._exchange = channel, exchange
        self.window, self._returned = window, returned
        # Delivery tag -> the caller's future and its message, until the broker answers.
        self._pending: dict[int, tuple[asyncio.Future[None], Outgoing]] = {}
        self._publish_frames: dict[str, bytes] = {}  # marshalled basic.publish per routing key
        self._dropped: Unavailable | None = None
        _lift_queue_bounds(channel)
        _confirm_in_one_pass(channel)

    @property
    def usable(self) -> bool:
        return self._dropped is None and not self._channel.is_closed

    async def publish(self, messages: Sequence[Outgoing]) -> list[asyncio.Future[None]]:
        """Send ``messages`` as the window makes room; each future settles with the broker's answer.

        Result: confirmed, or returned unroutable (counted by ``returned``). Errors: a nack is a
        ``RuntimeError``; a lost or dropped connection ``Unavailable``.
        """
        outcomes: list[asyncio.Future[None]] = []
        sizes = [len(message.body) for message in messages]
        while len(outcomes) < len(messages):
            done = len(outcomes)
            taken = await self.window.admit(sizes[done:])
            outcomes += await self._send(messages[done:done + taken])
        return outcomes

    def drop(self, reason: Unavailable) -> None:
        """Fail every message still in flight with ``reason``; publish nothing more."""
        self._dropped = reason
        self.window.close()
        pending, self._pending = self._pending, {}
        for outcome, _ in pending.values():
            _settle(outcome, reason)

    async def _send(self, messages: Sequence[Outgoing]) -> list[asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        outcomes = [loop.create_future() for _ in messages]
        try:
            if self._dropped is not None:
                raise self._dropped
            async with self._channel.lock:  # raises if the channel closed
                # Nothing awaits from here to the write: the tags go out in the order taken.
                self._channel.write_queue.put_nowait(self._frames(messages, outcomes))
        except Exception as exc:  # the channel or the connection went away first
            error = exc if isinstance(exc, Unavailable) else Unavailable(
                f"publish failed: {describe(exc)}")
            for outcome, message in zip(outcomes, messages, strict=True):
                if not outcome.done():
                    self.window.leave(len(message.body))
                    _settle(outcome, error)
        return outcomes

    def _frames(self, messages: Sequence[Outgoing],
                outcomes: list[asyncio.Future[None]]) -> ChannelFrame:
        """Register a confirm for each message and marshal them all into one write."""
        channel, parts = self._channel, []
        number, largest = channel.number, channel.max_content_size
        for message, outcome in zip(messages, outcomes, strict=True):
            channel.delivery_tag += 1
            tag = channel.delivery_tag
            confirmation = channel.create_future()
            channel.confirmations[tag] = confirmation
            channel.message_id_delivery_tag[message.id] = tag
            self._pending[tag] = (outcome, message)
            confirmation.add_done_callback(partial(self._answered, tag))
            parts.append(self._publish_frame(message.key))
            body = message.body
            parts.append(marshal(ContentHeader(0, len(body), message.properties), number))
            for start in range(0, len(body), largest):
                parts.append(marshal(ContentBody(body[start:start + largest]), number))
        return ChannelFrame(payload=b"".join(parts), should_close=False)

    def _publish_frame(self, key: str) -> bytes:
        frame = self._publish_frames.get(key)
        if frame is None:
            if len(self._publish_frames) > 1024:  # keys come from templates; bound them anyway
                self._publish_frames.clear()
            frame = marshal(spec.Basic.Publish(exchange=self._exchange, routing_key=key,
                                               mandatory=True), self._channel.number)
            self._publish_frames[key] = frame
        return frame

    def _answered(self, tag: int, confirmation: asyncio.Future[Any]) -> None:
        """The broker's answer for ``tag`` (or the channel's end) settles the caller's future."""
        entry = self._pending.pop(tag, None)
        if entry is None:  # dropped: already settled
            return
        outcome, message = entry
        self.window.leave(len(message.body))
        ids = self._channel.message_id_delivery_tag
        if ids.get(message.id) == tag:
            del ids[message.id]
        _settle(outcome, self._error(confirmation, message))

    def _error(self, confirmation: asyncio.Future[Any], message: Outgoing) -> Exception | None:
        if confirmation.cancelled():
            return Unavailable("publish cut off: the connection was dropped")
        exc = confirmation.exception()
        if exc is None:
            return None
        if isinstance(exc, PublishError):  # basic.return: the broker took it, routed it nowhere
            self._returned(message)
            return None
        if isinstance(exc, DeliveryError):
            return RuntimeError("the broker nacked the message")
        return Unavailable(f"publish failed: {describe(exc)}")


def _settle(outcome: asyncio.Future[None], error: BaseException | None) -> None:
    if outcome.done():
        return
    if error is None:
        outcome.set_result(None)
        return
    outcome.set_exception(error)
    outcome.exception()  # retrieved: the worker may have stopped before it reads it


def _lift_queue_bounds(channel: aiormq.Channel) -> None:
    """Unbound the connection's outgoing and the channel's incoming frame queues."""
    for queue in (channel.connection.write_queue, getattr(channel, "frames", None)):
        if isinstance(getattr(queue, "_maxsize", None), int):
            vars(queue)["_maxsize"] = 0


def _confirm_in_one_pass(channel: aiormq.Channel) -> None:
    """Settle every delivery tag a multiple ack covers at once, instead of a callback each."""
    confirm = getattr(channel, "_confirm_delivery", None)
    if not (callable(confirm) and isinstance(getattr(channel, "confirmations", None), dict)
            and hasattr(channel, "_on_confirm_frame")):
        return

    async def on_confirm(frame: Any) -> None:
        if not getattr(frame, "multiple", False):
            confirm(frame.delivery_tag, frame)
            return
        # A list first: settling a tag removes it from the dict being read. The whole dict: a
        # returned message's tag goes back in at its end.
        for tag in [tag for tag in channel.confirmations if tag <= frame.delivery_tag]:
            confirm(tag, frame)

    vars(channel)["_on_confirm_frame"] = on_confirm


def describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"
