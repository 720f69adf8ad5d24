"""The plugin contract: ``EventBackend``, as in ``senlin.events.base``, made async-aware."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, cast, get_args, get_origin

from pydantic import BaseModel
from typing_extensions import TypeVar  # a default for the type parameter (PEP 696), for 3.11

if TYPE_CHECKING:
    from .models import Action, Record

Reported = str | int | float | bool
OptionsT = TypeVar("OptionsT", bound=BaseModel | None, default=None)


class EventBackend(Generic[OptionsT]):
    """Base class of every dispatcher; generic over its options model.

    ``class X(EventBackend[XOptions])`` types ``self.options`` and sets ``Options = XOptions``.
    Override ``dump(level, action, **kwargs)`` or ``dump_batch(events)`` (or both; a backend with
    neither is rejected when it is loaded), each ``async def`` or plain ``def`` (run in a thread).
    kwargs are ``timestamp``, ``phase``, ``reason``, ``extra`` and ``id``; accept ``**kwargs``
    so that fields added later do not break you. Optional: ``start()`` and ``close()``; every
    ``start`` call, however it ends, is followed by one ``close`` call; ``report()`` for status.
    Raising from any of them means "not delivered": the worker retries, then dead-letters.
    Optional too: ``async def submit(events)``, the pipelined path (see its docstring); a
    backend that has it gets every record through it.

    Records (and the ``action`` and dicts in them) are shared with the other dispatchers: read
    them, do not change them, or set ``mutates_records = True`` to get a private copy of each.
    """

    # Not ClassVar[type[OptionsT]]: a class variable cannot be generic; the type argument sets it.
    Options: ClassVar[type[BaseModel] | None] = None
    mutates_records: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.has_pipeline() and not inspect.iscoroutinefunction(cls.submit):
            # Its futures belong to the event loop: a plain def run in a thread cannot make them.
            raise TypeError(f"{cls.__name__}.submit must be async def")
        argument = _options_argument(cls)
        if argument is None:
            return
        if "Options" not in cls.__dict__:
            cls.Options = argument
        elif not (isinstance(cls.Options, type) and issubclass(cls.Options, argument)):
            raise TypeError(
                f"{cls.__name__}.Options is {cls.Options!r}, but the class is declared "
                f"EventBackend[{argument.__name__}]"
            )

    def __init__(self, name: str, options: OptionsT | None = None) -> None:
        """``options`` default to ``Options()`` (every key at its default) when there are any."""
        self.name = name
        model = type(self).Options
        if options is None and model is not None:
            options = cast(OptionsT, model())
        self.options: OptionsT = cast(OptionsT, options)

    async def start(self) -> None:
        """Open connections; called before the first ``dump``, again after a failed attempt."""

    async def close(self) -> None:
        """Release what ``start`` opened, even if ``start`` failed or was cut off part way."""

    def report(self) -> Mapping[str, Reported]:
        """Facts for status (which table, how many messages were unroutable, ...); cheap, sync.

        Numbers are also exported as the ``dispatchd_dispatcher_reported`` gauge.
        """
        return {}

    def dump(self, level: int, action: Action, **kwargs: Any) -> None | Awaitable[None]:
        """Deliver one event. May be a coroutine function."""
        raise NotImplementedError(f"{type(self).__name__} does not implement dump()")

    def dump_batch(self, events: list[Record]) -> None | Awaitable[None]:
        """Deliver a whole batch at once. May be a coroutine function. Optional fast path."""
        raise NotImplementedError(f"{type(self).__name__} does not implement dump_batch()")

    async def submit(self, events: list[Record]) -> Sequence[asyncio.Future[None]]:
        """Hand ``events`` over without waiting for their delivery: one future per event, in order.

        A future's result means delivered; ``Unavailable`` an outage; any other exception (or a
        cancellation) a failure that spends an attempt. May wait for room in the sink's own
        window before it returns. Raising means none of ``events`` was handed over.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement submit()")

    @classmethod
    def has_pipeline(cls) -> bool:
        """Whether this backend overrides ``submit``: the worker then delivers through it."""
        return cls.submit is not EventBackend.submit

    @classmethod
    def has_batch(cls) -> bool:
        """Whether this backend overrides ``dump_batch``."""
        return cls.dump_batch is not EventBackend.dump_batch

    @classmethod
    def has_dump(cls) -> bool:
        """Whether this backend overrides ``dump``."""
        return cls.dump is not EventBackend.dump


def _options_argument(cls: type) -> type[BaseModel] | None:
    """The options model given as the type argument of an ``EventBackend`` base, if any."""
    for base in getattr(cls, "__orig_bases__", ()):
        origin = get_origin(base)
        if not (isinstance(origin, type) and issubclass(origin, EventBackend)):
            continue
        for argument in get_args(base):
            if isinstance(argument, type) and issubclass(argument, BaseModel):
                return argument
    return None
