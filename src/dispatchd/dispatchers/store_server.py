"""What the PostgreSQL and MySQL/MariaDB stores share: pools, outages, reconnection, status.

Each store keeps two pools: the writer's (batches, one at a time from the worker) and the
readers' (``fetch``, opened on the first query), so queries never wait behind a batch. A server
that cannot be reached (refused, unknown host, gone mid-batch, silent past ``command_timeout``,
refusing logins) is an outage: ``Unavailable``, so the worker keeps the events in the spool and
spends no attempts. The broken pool is dropped and the next call connects afresh, so the store
recovers on its own when the server is back, and a server down at start is not fatal.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Select

from dispatchd import Record, Unavailable

from .event_table import row_encoder, table_state
from .store import Query, Reported, Row, compile_query
from .store_url import StoreUrl
from .tls import handshake_failure

log = logging.getLogger(__name__)

PoolT = TypeVar("PoolT")
ConnT = TypeVar("ConnT")
CLOSE_TIMEOUT = 2.0  # a graceful pool close waits this long for the server, then cuts


@dataclass(frozen=True)
class Settings:
    """The connection options of ``[dispatchers.database]`` that a server store uses."""

    pool_size: int = 1
    read_pool_size: int = 4
    connect_timeout: float = 10.0
    command_timeout: float = 10.0
    ssl: ssl.SSLContext | None = None


class ServerStore(ABC, Generic[PoolT, ConnT]):
    """A store on a database server; subclasses speak to it through their driver."""

    dialect: Dialect
    row_of: Callable[[Record], Row]

    def __init__(self, url: StoreUrl, name: str, settings: Settings) -> None:
        self.url = url
        self.name = name
        self.settings = settings
        self.row_of = row_encoder(self.dialect)
        self._writer: PoolT | None = None
        self._readers: PoolT | None = None
        self._lock = asyncio.Lock()  # one pool opening at a time
        self._table = "not checked yet"
        self._connects = 0
        self._outages = 0
        self._last_outage = ""

    # -- what a driver module provides -------------------------------------------------------

    @abstractmethod
    async def _create_pool(self, size: int, writer: bool) -> PoolT:
        """A pool of at most ``size`` connections (autocommit for readers), connected now."""

    @abstractmethod
    async def _close_pool(self, pool: PoolT, graceful: bool) -> None:
        """Close ``pool``: wait for its connections if ``graceful``, else cut them."""

    @abstractmethod
    async def _prepare(self, pool: PoolT) -> bool:
        """Create Senlin's table unless there; True if created; ``SchemaError`` if not Senlin's."""

    @abstractmethod
    def _acquire(self, pool: PoolT) -> AbstractAsyncContextManager[ConnT]:
        """A connection of ``pool`` for one batch or query, given back afterwards."""

    @abstractmethod
    async def _write(self, conn: ConnT, rows: list[Row]) -> None:
        """Upsert ``rows`` in one transaction; a connection cut off mid-way is closed."""

    @abstractmethod
    async def _fetch(self, conn: ConnT, query: Query) -> Sequence[Iterable[Any]]:
        """Run ``query`` and return its rows, in column order; closed if cut off mid-way."""

    @abstractmethod
    def _is_outage(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the server cannot be reached, rather than refusing a statement."""

    # -- the Store protocol ------------------------------------------------------------------

    async def open(self) -> None:
        try:
            await self._writer_pool()
        except Unavailable as exc:
            # Not fatal: the first batch retries the connection with the worker's backoff.
            log.warning("dispatcher %s: %s; will retry", self.name, exc)

    async def write(self, rows: list[Row]) -> None:
        pool = await self._writer_pool()
        try:
            async with self._acquire(pool) as conn:
                async with asyncio.timeout(self.settings.command_timeout):
                    await self._write(conn, rows)
        except Exception as exc:
            if not self._is_outage(exc):
                raise
            await self._drop("writer", pool)
            raise self._unavailable(f"writing to {self.url.masked} failed", exc) from None

    async def fetch(self, statement: Select[Any]) -> list[dict[str, Any]]:
        query = compile_query(statement, self.dialect)
        await self._writer_pool()  # the table is checked (or created) before the first query
        pool = await self._reader_pool()
        try:
            # The timeout is the statement's: waiting for a free reader is no outage.
            async with self._acquire(pool) as conn:
                async with asyncio.timeout(self.settings.command_timeout):
                    rows = await self._fetch(conn, query)
        except Exception as exc:
            if not self._is_outage(exc):
                raise
            await self._drop("readers", pool)
            raise self._unavailable(f"reading from {self.url.masked} failed", exc) from None
        return query.dicts(rows)

    async def close(self) -> None:
        async with self._lock:
            pools = [p for p in (self._writer, self._readers) if p is not None]
            self._writer = self._readers = None
        for pool in pools:
            await self._close_quietly(pool, graceful=True)

    def report(self) -> Mapping[str, Reported]:
        facts: dict[str, Reported] = {
            "url": self.url.masked,
            "driver": self.url.driver,
            "event_table": self._table,
            "connected": self._writer is not None,
            "connects": self._connects,
            "outages": self._outages,
        }
        if self._last_outage:
            facts["last_outage"] = self._last_outage
        return facts

    # -- pools ---------------------------------------------------------------------------------

    async def _writer_pool(self) -> PoolT:
        if (pool := self._writer) is not None:
            return pool
        async with self._lock:
            if self._writer is None:
                pool = await self._connect(self.settings.pool_size, writer=True)
                try:
                    async with asyncio.timeout(self.settings.command_timeout):
                        created = await self._prepare(pool)
                except BaseException as exc:
                    await self._close_quietly(pool, graceful=False)
                    if isinstance(exc, Exception) and self._is_outage(exc):
                        raise self._unavailable(f"cannot reach {self.url.masked}", exc) from None
                    raise
                if created or self._table == "not checked yet":  # a reconnect finds it there
                    self._table = table_state(created)
                self._writer = pool
                log.info("dispatcher %s: connected to %s (%s), event table %s", self.name,
                         self.url.masked, self.url.driver, self._table)
            return self._writer

    async def _reader_pool(self) -> PoolT:
        if (pool := self._readers) is not None:
            return pool
        async with self._lock:
            if self._readers is None:
                self._readers = await self._connect(self.settings.read_pool_size, writer=False)
            return self._readers

    async def _connect(self, size: int, writer: bool) -> PoolT:
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                pool = await self._create_pool(size, writer)
        except Exception as exc:
            if not self._is_outage(exc):  # ssl.SSLError is an OSError: an outage too
                raise
            raise self._unavailable(f"cannot reach {self.url.masked}", exc) from None
        self._connects += 1
        return pool

    async def _drop(self, which: str, pool: PoolT) -> None:
        """Forget a pool whose server went away; the next call opens a new one."""
        async with self._lock:
            if which == "writer" and self._writer is pool:
                self._writer = None
            elif which == "readers" and self._readers is pool:
                self._readers = None
        await self._close_quietly(pool, graceful=False)

    async def _close_quietly(self, pool: PoolT, graceful: bool) -> None:
        try:
            if graceful:
                try:
                    async with asyncio.timeout(CLOSE_TIMEOUT):
                        await self._close_pool(pool, graceful=True)
                    return
                except TimeoutError:
                    pass  # the server does not answer: cut the connections instead
            await self._close_pool(pool, graceful=False)
        except Exception as exc:  # the pool is being dropped either way
            log.debug("dispatcher %s: closing a pool: %s", self.name,
                      self.url.scrub(f"{type(exc).__name__}: {exc}"))

    def _unavailable(self, what: str, exc: BaseException) -> Unavailable:
        if isinstance(exc, TimeoutError):
            detail = "no answer in time"
        elif tls_failure := handshake_failure(exc):
            detail = tls_failure
        else:
            detail = f"{type(exc).__name__}: {str(exc) or repr(exc)}"
        self._outages += 1
        self._last_outage = self.url.scrub(f"{what}: {detail}")
        return Unavailable(self._last_outage)
