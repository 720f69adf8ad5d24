"""The ``message`` dispatcher: publishes events to a RabbitMQ topic exchange with confirms.

One message per event (formats ``json`` and ``senlin``), or, with ``batch``, one message per up to
``batch_max`` events of a worker batch. Publishing is a pipeline (``submit``): up to
``max_unconfirmed`` messages (``max_unconfirmed_bytes`` of bodies) wait for their confirms at
once, each event with its own future; the worker moves its cursor over the confirmed prefix and
retries only what failed. A nack fails its events; a lost connection, or confirms that stop coming
for ``confirm_timeout`` while messages wait (a stalled broker), fails everything in flight with
``Unavailable``: the worker backs off without spending attempts and submits them again, and the
next submit reconnects, so a broker that was absent at start or went away is picked up when it
returns.

Messages are published ``mandatory``: one that routes to no queue comes back (basic.return before
its confirm). It is counted in ``report()`` and logged once per routing key, and not retried: it
would not route until someone binds a queue, and retrying would hold every later event behind it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import string
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aio_pika.exceptions import AMQPError, ChannelPreconditionFailed
from pamqp.commands import Basic
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from yarl import URL

from dispatchd import Action, EventBackend, Record, Unavailable, level_name

from . import notifications
from .confirms import Confirms, Outgoing, Window, describe
from .tls import client_context

Properties = Basic.Properties
PERSISTENT = 2  # delivery mode: the broker writes the message to disk

log = logging.getLogger(__name__)

# A stalled broker never answers a graceful close; do not hold the worker for long.
CLOSE_TIMEOUT = 1.0
TEMPLATE_FIELDS = frozenset({"event_type", "priority", "otype"})
DEFAULTS = {
    "json": ("dispatchd", "{event_type}"),
    "senlin": ("senlin", "versioned_notifications.{priority}"),
    "batch": ("dispatchd", "batch"),
}
BATCH_TYPE = "dispatchd.batch"
BATCH_ONLY = ("batch_max", "batch_max_bytes")
# Routing keys remembered for logging an unroutable one once; past this, no more first-time lines.
MAX_LOGGED_KEYS = 1024


class MessageOptions(BaseModel):
    """``[dispatchers.message]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    format: Literal["json", "senlin", "batch"] = "json"
    batch_max: int = Field(default=100, gt=0)  # records per message (format batch)
    # The broker refuses messages over its max_message_size (16 MiB by default since RabbitMQ 4.0).
    batch_max_bytes: int = Field(default=1024 * 1024, gt=0)
    exchange: str = ""  # default by format: "dispatchd" (json, batch) or "senlin" (senlin)
    routing_key: str = ""  # default by format: see DEFAULTS
    # Both default by format: a default oslo.messaging deployment (senlin) declares its exchange
    # non-durable and, on publish, a queue per routing key so notifications wait for a consumer.
    durable: bool | None = None  # json, batch: true; senlin: false
    default_queue: bool | None = None  # json, batch: false; senlin: true
    # Senlin's publisher is senlin-engine:<host>; consumers filtering on it keep working.
    publisher_id: str = Field(default_factory=lambda: f"senlin-engine:{socket.gethostname()}")
    connect_timeout: float = Field(default=10.0, gt=0)
    # Seconds without any confirm while messages wait for one: the broker counts as stalled.
    confirm_timeout: float = Field(default=10.0, gt=0)
    # The pipeline: messages published and not yet confirmed, by count and by body bytes.
    max_unconfirmed: int = Field(default=1000, gt=0)
    max_unconfirmed_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    ssl_ca_file: str | None = None
    ssl_cert_file: str | None = None
    ssl_key_file: str | None = None
    ssl_verify: bool = True

    @field_validator("url")
    @classmethod
    def _amqp_url(cls, url: str) -> str:
        parsed = URL(url)
        if parsed.scheme not in ("amqp", "amqps") or not parsed.host:
            raise ValueError("url must be amqp://user:password@host:port/vhost (or amqps://)")
        return url

    @field_validator(*BATCH_ONLY)
    @classmethod
    def _batch_only(cls, value: int, info: ValidationInfo) -> int:
        # Only set values get here; silently ignoring one would hide a forgotten format = "batch".
        if info.data.get("format", "batch") != "batch":
            raise ValueError(f'{info.field_name} applies only to format = "batch"')
        return value

    @field_validator("routing_key")
    @classmethod
    def _known_fields(cls, template: str, info: ValidationInfo) -> str:
        try:
            used = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        except ValueError as exc:
            raise ValueError(f"bad routing_key template: {exc}") from None
        unknown = used - TEMPLATE_FIELDS
        if unknown:
            raise ValueError(
                f"unknown routing_key field(s) {sorted(unknown)}; use {sorted(TEMPLATE_FIELDS)}"
            )
        if used and info.data.get("format") == "batch":
            raise ValueError(
                f"routing_key field(s) {sorted(used)} are per event, but a batch message mixes"
                ' events: format = "batch" takes a fixed routing_key (default "batch")'
            )
        return template

    @model_validator(mode="after")
    def _format_defaults(self) -> MessageOptions:
        exchange, routing_key = DEFAULTS[self.format]
        oslo = self.format == "senlin"
        object.__setattr__(self, "exchange", self.exchange or exchange)
        object.__setattr__(self, "routing_key", self.routing_key or routing_key)
        object.__setattr__(self, "durable", not oslo if self.durable is None else self.durable)
        if self.default_queue is None:
            object.__setattr__(self, "default_queue", oslo)
        return self

    @property
    def safe_url(self) -> str:
        """The url without its password, for logs and status."""
        return str(URL(self.url).with_password(None)) if URL(self.url).password else self.url

    def ssl_context(self) -> ssl.SSLContext | None:
        if URL(self.url).scheme != "amqps":
            return None
        return client_context(self.ssl_ca_file, self.ssl_cert_file, self.ssl_key_file,
                              self.ssl_verify)


class MessageDispatcher(EventBackend[MessageOptions]):
    """Publishes events as persistent AMQP messages, many awaiting their confirms at once."""

    def __init__(self, name: str, options: MessageOptions | None = None) -> None:
        super().__init__(name, options)
        self._connection: AbstractConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._confirms: Confirms | None = None  # the publishing channel's pipeline
        self._watchdog: asyncio.Task[None] | None = None
        self._declarer: AbstractChannel | None = None  # declares default queues, apart
        self._declared: set[str] = set()  # default queues declared on this connection
        self._unroutable_events = 0
        self._unroutable_messages = 0
        self._unroutable_keys: set[str] = set()
        self._last_unroutable_key = ""
        self._connects = 0
        self._stalls = 0
        self._peak = 0  # unconfirmed_peak of the connections before this one

    async def start(self) -> None:
        try:
            await self._connect()
        except Unavailable as exc:
            # Not fatal: the first delivery retries the connection with the worker's backoff.
            log.warning("dispatcher %s: %s; will retry", self.name, exc)

    async def close(self) -> None:
        await self._disconnect()

    async def dump(self, level: int, action: Action, **kwargs: Any) -> None:
        await self.dump_batch([Record(level=level, action=action, **kwargs)])

    async def dump_batch(self, events: list[Record]) -> None:
        """Publish ``events`` and wait for every confirm (the worker uses ``submit``)."""
        messages = list(dict.fromkeys(await self.submit(events)))  # one future per message
        results = await asyncio.gather(*messages, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if isinstance(error, Unavailable):
                raise error
        if errors:  # the broker answered and said no: a real failure, which spends an attempt
            raise RuntimeError(f"broker nacked {len(errors)} of {len(results)} messages")

    async def submit(self, events: list[Record]) -> list[asyncio.Future[None]]:
        """Publish ``events`` without waiting for their confirms: one future per event.

        Waits while the window is full. The events of one ``batch`` message share its future.
        """
        confirms = await self._connect()
        messages = self.messages(events)
        await self._declare_default_queues([message.key for message in messages])
        futures = await confirms.publish(messages)
        if len(messages) == len(events):
            return futures
        return [future for future, message in zip(futures, messages, strict=True)
                for _ in range(message.events)]

    def report(self) -> Mapping[str, str | int | float | bool]:
        """Where it publishes, and what came back unroutable since start (events and messages)."""
        facts: dict[str, str | int | float | bool] = {
            "format": self.options.format,
            "exchange": self.options.exchange,
            "durable": bool(self.options.durable),
            "default_queue": bool(self.options.default_queue),
            "unroutable": self._unroutable_events,
            "unroutable_messages": self._unroutable_messages,
            "unroutable_keys": len(self._unroutable_keys),
        }
        if self._last_unroutable_key:
            facts["last_unroutable_key"] = self._last_unroutable_key
        # In flight now, and at most; connections made; stalls (confirm_timeout passed without
        # a confirm while messages waited).
        window = self._confirms.window if self._confirms is not None else None
        facts["unconfirmed"] = window.count if window is not None else 0
        facts["unconfirmed_peak"] = max(self._peak, window.peak if window is not None else 0)
        facts["connects"] = self._connects
        facts["stalls"] = self._stalls
        return facts

    def messages(self, events: list[Record]) -> list[Outgoing]:
        """The routing keys and AMQP messages for a batch of records, in order."""
        if self.options.format == "batch":
            return [self._batch_message(chunk) for chunk in self._chunks(events)]
        return [self.message(record) for record in events]

    def message(self, record: Record) -> Outgoing:
        """The routing key and the AMQP message for one record (a batch of one for ``batch``)."""
        if self.options.format == "batch":
            return self._batch_message([(record, _json_body(record))])
        derived = record.derived()
        if self.options.format == "senlin":
            etype = notifications.senlin_event_type(record)
            priority = notifications.oslo_priority(record.level)
            body = notifications.senlin_body(record, self.options.publisher_id)
        else:
            etype = notifications.event_type(record, derived)
            priority = notifications.priority(record)
            body = notifications.json_body(record, derived, etype)
        key = self.options.routing_key.format(
            event_type=etype, priority=priority.lower(), otype=(derived.otype or "").lower()
        )
        return Outgoing(key, body, Properties(
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=PERSISTENT,
            message_id=record.id,
            timestamp=record.timestamp,
            message_type=etype,
            app_id="dispatchd",
            headers={"level": record.level, "priority": priority},
        ))

    def _chunks(self, events: list[Record]) -> Iterator[list[tuple[Record, bytes]]]:
        """Records with their JSON bodies, in order, cut at ``batch_max`` and ``batch_max_bytes``."""
        limit, limit_bytes = self.options.batch_max, self.options.batch_max_bytes
        chunk: list[tuple[Record, bytes]] = []
        size = 1  # "[" and, per element, its bytes plus one "," or "]"
        for record in events:
            body = _json_body(record)
            if chunk and (len(chunk) == limit or size + len(body) + 1 > limit_bytes):
                yield chunk
                chunk, size = [], 1
            chunk.append((record, body))  # a record over the byte limit travels alone
            size += len(body) + 1
        if chunk:
            yield chunk

    def _batch_message(self, chunk: list[tuple[Record, bytes]]) -> Outgoing:
        records = [record for record, _ in chunk]
        top = max(record.level for record in records)
        body = b"[" + b",".join(body for _, body in chunk) + b"]"
        return Outgoing(self.options.routing_key.format(), body, Properties(
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=PERSISTENT,
            # The same records give the same id, so a consumer recognises a retried publish.
            message_id=f"{records[0].id}..{records[-1].id}",
            timestamp=min(record.timestamp for record in records),
            message_type=BATCH_TYPE,
            app_id="dispatchd",
            headers={"count": len(records), "level": top, "priority": level_name(top)},
        ), events=len(records))

    def _count_returned(self, message: Outgoing) -> None:
        """A basic.return: the broker took the message and routed it nowhere."""
        key = message.key
        self._unroutable_messages += 1
        self._unroutable_events += message.events
        self._last_unroutable_key = key
        if key in self._unroutable_keys or len(self._unroutable_keys) >= MAX_LOGGED_KEYS:
            return
        self._unroutable_keys.add(key)
        log.warning(
            "dispatcher %s: messages with routing key %r route to no queue on exchange %r;"
            " counted as unroutable in status (logged once per key), not retried:"
            " bind a queue to receive them",
            self.name, key, self.options.exchange,
        )

    async def _declare_default_queues(self, keys: list[str]) -> None:
        """As oslo.messaging's notifier: a queue named after each routing key, once per connection.

        Messages then wait for a consumer that has not started yet instead of being dropped.
        """
        if not self.options.default_queue:
            return
        for key in dict.fromkeys(keys):
            if key not in self._declared:
                await self._declare_default_queue(key)
                self._declared.add(key)

    async def _declare_default_queue(self, key: str) -> None:
        assert self._connection is not None and self._exchange is not None
        try:
            if self._declarer is None or self._declarer.is_closed:
                self._declarer = await self._connection.channel(publisher_confirms=False)
            try:
                queue = await self._declarer.declare_queue(
                    key, durable=bool(self.options.durable), auto_delete=False
                )
            except ChannelPreconditionFailed as exc:
                # Declared by a consumer with other arguments (durable, quorum...): use it as it is.
                log.info("dispatcher %s: queue %r exists with other arguments (%s); binding it"
                         " as it is", self.name, key, exc)
                self._declarer = await self._connection.channel(publisher_confirms=False)
                queue = await self._declarer.declare_queue(key, passive=True)
            await queue.bind(self._exchange.name, key)
        except (AMQPError, OSError) as exc:
            await self._disconnect()
            raise Unavailable(f"declaring queue {key!r} failed: {describe(exc)}") from None

    async def _connect(self) -> Confirms:
        """The publishing pipeline, connecting first unless the connection is still usable."""
        if self._confirms is not None and self._confirms.usable:
            if self._connection is not None and not self._connection.is_closed:
                return self._confirms
        await self._disconnect()
        opts = self.options
        try:
            self._connection = await aio_pika.connect(
                opts.url, timeout=opts.connect_timeout, ssl_context=opts.ssl_context()
            )
            channel, self._exchange = await self._declare_exchange(self._connection)
            window = Window(opts.max_unconfirmed, opts.max_unconfirmed_bytes)
            self._confirms = Confirms(await channel.get_underlay_channel(), self._exchange.name,
                                      window, self._count_returned)
        except (AMQPError, OSError, TimeoutError, ssl.SSLError) as exc:
            await self._disconnect()
            raise Unavailable(f"cannot reach {opts.safe_url}: {describe(exc)}") from None
        self._watchdog = asyncio.create_task(self._watch(self._confirms))
        self._connects += 1
        log.info("dispatcher %s: connected to %s, exchange %r", self.name, opts.safe_url,
                 opts.exchange)
        return self._confirms

    async def _declare_exchange(
        self, connection: AbstractConnection
    ) -> tuple[AbstractChannel, AbstractExchange]:
        """The topic exchange, declared; one that exists with other arguments is used as it is."""
        opts = self.options
        # on_return_raises: a basic.return fails that message's publish with PublishError.
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            return channel, await channel.declare_exchange(
                opts.exchange, aio_pika.ExchangeType.TOPIC, durable=bool(opts.durable)
            )
        except ChannelPreconditionFailed as exc:
            # Consumers declared it first (say durable where we would not): theirs is the one
            # they read from, so publish to it; refusing would stop the pipeline for a flag.
            log.warning("dispatcher %s: exchange %r exists with other arguments (%s); publishing"
                        " to it as it is", self.name, opts.exchange, exc)
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            return channel, await channel.get_exchange(opts.exchange, ensure=True)

    async def _watch(self, confirms: Confirms) -> None:
        """Drop the connection once confirms stop coming while messages wait for them.

        Measured from the last confirm, not from each publish: a loop busy with ingest delays
        every confirm a little, and must not make a healthy broker look stalled.
        """
        limit = self.options.confirm_timeout
        while (waited := confirms.window.stalled_for()) < limit:
            await asyncio.sleep(limit - waited)
        self._stalls += 1
        log.warning("dispatcher %s: confirm timeout: no publisher confirm for %gs with %d messages"
                    " waiting; reconnecting", self.name, limit, confirms.window.count)
        await self._disconnect(f"confirm timeout: no publisher confirm for {limit:g}s")

    async def _disconnect(self, reason: str = "the connection was closed") -> None:
        """Close the connection; what is still in flight fails with ``Unavailable(reason)``."""
        connection, self._connection, self._exchange = self._connection, None, None
        confirms, self._confirms = self._confirms, None
        watchdog, self._watchdog = self._watchdog, None
        self._declarer = None
        self._declared.clear()
        if confirms is not None:
            self._peak = max(self._peak, confirms.window.peak)
            confirms.drop(Unavailable(reason))
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()
        if connection is not None:
            await _quietly_close(connection)


def _json_body(record: Record) -> bytes:
    """The ``json`` format's body of one record."""
    derived = record.derived()
    return notifications.json_body(record, derived, notifications.event_type(record, derived))


async def _quietly_close(connection: AbstractConnection) -> None:
    try:
        await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT)
    except Exception as exc:  # the connection is being dropped either way
        log.debug("closing an AMQP connection: %s", describe(exc))
