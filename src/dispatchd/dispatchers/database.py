"""The ``database`` dispatcher: Senlin's ``event`` table, upserted on the record id.

The store is chosen by ``url``: a SQLite file (store_sqlite), PostgreSQL (store_postgres) or
MySQL/MariaDB (store_mysql). Each writes into an existing Senlin table as it is, or creates it
with Senlin's DDL and dispatchd's indexes, and answers queries (``fetch``) on connections of
their own. Built on what any plugin may use: the ``dispatchd`` package's exports and
``dispatchd.sqlite``.
"""

from __future__ import annotations

import ssl as tls  # the options have a field named ssl
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Select

from dispatchd import Action, EventBackend, Record, Unavailable

from . import store_url
from .store import Reported, Store
from .store_server import ServerStore, Settings
from .store_sqlite import SQLITE, UPSERT, SqliteStore, row_of
from .store_url import StoreUrl
from .tls import client_context

__all__ = ["SQLITE", "UPSERT", "DatabaseDispatcher", "DatabaseOptions", "row_of"]

SERVER_ONLY = ("password", "pool_size", "read_pool_size", "connect_timeout", "command_timeout",
               "ssl", "ssl_ca_file", "ssl_cert_file", "ssl_key_file", "ssl_verify")
SSL_ONLY = ("ssl_ca_file", "ssl_cert_file", "ssl_key_file", "ssl_verify")


class DatabaseOptions(BaseModel):
    """``[dispatchers.database]``."""

    # Inputs stay out of error texts: the url and password may hold a secret.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    # Never in a repr: it may hold the password (status and logs show ``safe_url``).
    url: str = Field(default="sqlite:///var/events.db", repr=False)
    # Taken as it is (no percent-encoding): for a password from ${NAME} with any characters.
    password: str | None = Field(default=None, repr=False)
    pool_size: int = Field(default=1, gt=0)  # writer connections: batches go one at a time
    read_pool_size: int = Field(default=4, gt=0)  # connections for queries, opened on the first
    connect_timeout: float = Field(default=10.0, gt=0)
    # A batch or query without an answer this long counts as an outage (keep it below the
    # dispatcher's timeout, which would spend an attempt instead).
    command_timeout: float = Field(default=10.0, gt=0)
    ssl: bool = False
    ssl_ca_file: str | None = None
    ssl_cert_file: str | None = None
    ssl_key_file: str | None = None
    ssl_verify: bool = True

    @field_validator("url")
    @classmethod
    def _known_store(cls, url: str) -> str:
        store_url.parse(url, password=None)  # raises ValueError, which never shows the password
        return url

    @model_validator(mode="after")
    def _fits_the_store(self) -> DatabaseOptions:
        parsed = self.store_url  # checks url and password together
        given = self.model_fields_set
        if parsed.dialect == "sqlite" and (wrong := [k for k in SERVER_ONLY if k in given]):
            raise ValueError(f"{', '.join(wrong)} apply only to a PostgreSQL or MySQL url")
        if not self.ssl and (wrong := [k for k in SSL_ONLY if k in given]):
            raise ValueError(f"{', '.join(wrong)} apply only with ssl = true")
        if self.ssl_key_file and not self.ssl_cert_file:
            raise ValueError("ssl_key_file needs ssl_cert_file")
        return self

    @cached_property
    def store_url(self) -> StoreUrl:
        return store_url.parse(self.url, password=self.password)

    @property
    def safe_url(self) -> str:
        """The url without its password, for logs and status."""
        return self.store_url.masked

    @property
    def sqlite_path(self) -> Path | None:
        return self.store_url.sqlite_path

    def ssl_context(self) -> tls.SSLContext | None:
        """The client context; ``ValueError`` naming the option whose file cannot be loaded."""
        if not self.ssl:
            return None
        return client_context(self.ssl_ca_file, self.ssl_cert_file, self.ssl_key_file,
                              self.ssl_verify)

    def settings(self) -> Settings:
        return Settings(self.pool_size, self.read_pool_size, self.connect_timeout,
                        self.command_timeout, self.ssl_context())


def server_store(dialect: str) -> type[ServerStore[Any, Any]]:
    """The store class for a server dialect, imported only when a url names that dialect."""
    if dialect == "postgresql":
        from .store_postgres import PostgresStore
        return PostgresStore
    from .store_mysql import MysqlStore
    return MysqlStore


def open_store(options: DatabaseOptions, name: str) -> Store:
    """The store ``options.url`` names; nothing is connected yet."""
    url = options.store_url
    if url.dialect == "sqlite":
        return SqliteStore(url, name)
    return server_store(url.dialect)(url, name, options.settings())


class DatabaseDispatcher(EventBackend[DatabaseOptions]):
    """Stores events in Senlin's ``event`` table; batches go in one transaction."""

    def __init__(self, name: str, options: DatabaseOptions | None = None) -> None:
        super().__init__(name, options)
        self._store: Store | None = None

    @property
    def dialect(self) -> Dialect:
        """The SQLAlchemy dialect ``fetch`` compiles statements for (``.name``: sqlite,
        postgresql or mysql)."""
        if self._store is not None:
            return self._store.dialect
        dialect = self.options.store_url.dialect
        return SQLITE if dialect == "sqlite" else server_store(dialect).dialect

    async def start(self) -> None:
        self._store = open_store(self.options, self.name)
        await self._store.open()

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.close()

    def report(self) -> Mapping[str, Reported]:
        if self._store is None:
            return {"url": self.options.safe_url, "event_table": "not open yet"}
        return self._store.report()

    async def dump(self, level: int, action: Action, **kwargs: Any) -> None:
        record = Record(level=level, action=action, **kwargs)
        await self.dump_batch([record])

    async def dump_batch(self, events: list[Record]) -> None:
        store = self._store
        if store is None:
            raise RuntimeError("database dispatcher is not started")
        row = store.row_of
        await store.write([row(record) for record in events])

    async def fetch(self, statement: Select[Any]) -> list[dict[str, Any]]:
        """Run ``statement`` on the store's read connection(s), never the writer's.

        Rows come back as dicts keyed by the statement's column keys, values as SQLAlchemy's
        result processing gives them (``timestamp`` a naive UTC ``datetime`` on every
        dialect). ``Unavailable`` when the server cannot be reached or the dispatcher has not
        started.
        """
        store = self._store
        if store is None:
            raise Unavailable("the database dispatcher has not started")
        return await store.fetch(statement)
