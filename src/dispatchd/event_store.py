"""What a dispatcher offers to be queried through ``GET /v1/events``: the ``EventStore`` protocol.

The query API builds SQLAlchemy Core selects over Senlin's ``event`` table; a store runs them on
connections of its own, never the writer's, so that reads do not delay delivery.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Select


@runtime_checkable
class EventStore(Protocol):
    """A dispatcher whose ``event`` table can be read back (the ``database`` dispatcher)."""

    @property
    def dialect(self) -> Dialect:
        """The SQL dialect the store speaks: selects are shaped for it (NULL order, id prefixes)."""
        ...

    async def fetch(self, statement: Select[Any]) -> list[dict[str, Any]]:
        """The rows of ``statement``, each a dict by column name; ``Unavailable`` if it cannot
        be reached now (not started, server down)."""
        ...
