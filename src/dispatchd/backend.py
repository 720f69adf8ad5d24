"""The plugin contract: ``EventBackend``, as in ``senlin.events.base``, made async-aware."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from .models import Action, Record


class EventBackend:
    """Base class of every dispatcher.

    Override ``dump(level, action, **kwargs)`` (``async def`` or plain ``def``; a plain one runs in a
    thread). kwargs are ``timestamp``, ``phase``, ``reason``, ``extra`` and ``id``; accept ``**kwargs``
    so that fields added later do not break you. Optional: an ``Options`` pydantic model for the
    ``[dispatchers.<name>]`` table, ``start()``, ``close()`` and ``dump_batch(events)`` as a fast path.
    Raising from any of them means "not delivered": the worker retries, then dead-letters.

    Records (and the ``action`` and dicts in them) are shared with the other dispatchers: read
    them, do not change them, or set ``mutates_records = True`` to get a private copy of each.
    """

    Options: ClassVar[type[BaseModel] | None] = None
    mutates_records: ClassVar[bool] = False

    def __init__(self, name: str, options: BaseModel | None = None) -> None:
        self.name = name
        self.options = options

    async def start(self) -> None:
        """Open connections; called once before the first ``dump``."""

    async def close(self) -> None:
        """Release what ``start`` opened; called once at stop or reload."""

    def dump(self, level: int, action: Action, **kwargs: Any) -> Any:
        """Deliver one event. May be a coroutine function."""
        raise NotImplementedError(f"{type(self).__name__} does not implement dump()")

    def dump_batch(self, events: list[Record]) -> Any:
        """Deliver a whole batch at once. May be a coroutine function. Optional fast path."""
        raise NotImplementedError

    @classmethod
    def has_batch(cls) -> bool:
        """Whether this backend overrides ``dump_batch``."""
        return cls.dump_batch is not EventBackend.dump_batch
