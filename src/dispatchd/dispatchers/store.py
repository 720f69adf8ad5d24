"""What every store of the ``database`` dispatcher offers, and the read path they share.

A store owns the connections to one database: a writer (``write``: one batch of rows, in one
transaction, upserted on ``id``) and, apart from it, readers (``fetch``: a SQLAlchemy ``Select``
compiled for the store's dialect, its values bound as parameters, never spliced into the SQL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Select

from dispatchd import Record

Row = tuple[Any, ...]
Reported = str | int | float | bool


class Store(Protocol):
    """One database: open it, write batches of rows, read with ``fetch``, close it."""

    @property
    def dialect(self) -> Dialect:
        """The dialect ``fetch`` compiles for."""

    @property
    def row_of(self) -> Callable[[Record], Row]:
        """A record's row, encoded as Senlin's table on this dialect stores it."""

    async def open(self) -> None:
        """Connect and make sure Senlin's ``event`` table is there; an outage is not fatal."""

    async def write(self, rows: list[Row]) -> None:
        """Upsert ``rows`` (``row_of``'s) in one transaction; ``Unavailable`` on an outage."""

    async def fetch(self, statement: Select[Any]) -> list[dict[str, Any]]:
        """Run a query on the readers' connection(s), never the writer's."""

    async def close(self) -> None:
        """Close every connection; closing twice, or without an open, is harmless."""

    def report(self) -> Mapping[str, Reported]:
        """Facts for status: the url without its password, the table, the driver."""


@dataclass(frozen=True)
class Query:
    """A ``Select`` compiled for one dialect: SQL, its parameters in order, how to read rows."""

    sql: str
    params: tuple[Any, ...]
    keys: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]

    def dicts(self, rows: Sequence[Iterable[Any]]) -> list[dict[str, Any]]:
        """Rows as dicts by column key, each value as SQLAlchemy's result processing gives it."""
        keys, processors = self.keys, self.processors
        if not any(processors):
            return [dict(zip(keys, row, strict=True)) for row in rows]
        return [
            {key: value if fn is None or value is None else fn(value)
             for key, fn, value in zip(keys, processors, row, strict=True)}
            for row in rows
        ]


def compile_query(statement: Select[Any], dialect: Dialect) -> Query:
    """``statement`` in ``dialect``'s SQL and paramstyle, its values as that dialect binds them.

    So a ``DateTime`` is compared as SQLite's text on SQLite and as a timestamp elsewhere, and
    every value reaches the server as a parameter.
    """
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    values = compiled.params
    binders = compiled._bind_processors  # what SQLAlchemy's own execution applies to each value
    params = tuple(
        fn(values[name]) if callable(fn := binders.get(name)) else values[name]
        for name in compiled.positiontup or ()
    )
    columns = list(statement.selected_columns)
    processors = tuple(
        column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
    )
    keys = tuple(statement.selected_columns.keys())
    return Query(str(compiled), params, keys, processors)
