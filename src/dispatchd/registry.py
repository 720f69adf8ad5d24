"""Discovers dispatchers in the ``dispatchd.dispatchers`` entry-point group and builds them.

Like stevedore, entry points are filtered by name before ``load()`` and a plugin that fails is
reported and skipped; like pluggy, a malformed plugin is rejected at load with a clear error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .backend import EventBackend
from .config import Config, PositiveFloat, PositiveInt, format_errors
from .constants import ENTRY_POINT_GROUP
from .errors import PluginError, Problem
from .models import Level

log = logging.getLogger(__name__)

COMMON_KEYS = ("level", "timeout", "max_attempts")  # dispatchd's keys in [dispatchers.<name>]


class _Common(BaseModel):
    """The keys of ``[dispatchers.<name>]`` that override ``[dispatch]`` for one dispatcher."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    level: Level | None = None
    timeout: PositiveFloat | None = None
    max_attempts: PositiveInt | None = None


@dataclass(frozen=True)
class Overrides:
    """A dispatcher's own ``level``, ``timeout`` and ``max_attempts``; ``None``: the global one."""

    level: int | None = None
    timeout: float | None = None
    max_attempts: int | None = None


@dataclass(frozen=True)
class PluginInfo:
    """What ``dispatchd plugins`` shows for one entry point."""

    name: str
    value: str
    distribution: str | None
    error: str | None


@dataclass(frozen=True)
class DispatcherSpec:
    """A dispatcher ready to build: its class, validated options and own overrides."""

    name: str
    cls: type[EventBackend[Any]]
    options: BaseModel | None
    overrides: Overrides = Overrides()

    def build(self) -> EventBackend[Any]:
        return self.cls(self.name, self.options)


def overrides(config: Config, name: str) -> Overrides:
    """The dispatcher's own overrides from its table; ``PluginError`` if they do not validate."""
    found, _, problems = _split(name, config.dispatcher_table(name))
    if problems:
        raise PluginError("; ".join(str(p) for p in problems))
    return found


def discover() -> dict[str, EntryPoint]:
    """Every entry point of the group, by name; rescanned at each call."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found and found[ep.name].value != ep.value:
            log.warning("dispatcher %r is registered twice; using %s", ep.name, found[ep.name].value)
            continue
        found.setdefault(ep.name, ep)
    return found


def load(ep: EntryPoint) -> type[EventBackend[Any]]:
    """Import an entry point and check it is a usable ``EventBackend`` subclass."""
    try:
        obj = ep.load()
    except Exception as exc:  # any import-time failure of foreign code is the plugin's error
        raise PluginError(f"dispatcher {ep.name!r} ({ep.value}) failed to import: {exc!r}") from exc
    if not (isinstance(obj, type) and issubclass(obj, EventBackend)):
        raise PluginError(f"dispatcher {ep.name!r} ({ep.value}) is not an EventBackend subclass")
    options = obj.Options
    if options is not None and not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise PluginError(f"dispatcher {ep.name!r}: Options must be a pydantic BaseModel subclass")
    if not (obj.has_dump() or obj.has_batch()):
        # Caught here, not later as a dead letter per event.
        raise PluginError(
            f"dispatcher {ep.name!r} ({ep.value}) implements neither dump() nor dump_batch()"
        )
    return obj


def inspect_all() -> list[PluginInfo]:
    """Every discovered dispatcher, loaded to see whether it imports."""
    infos = []
    for name, ep in sorted(discover().items()):
        try:
            load(ep)
            error = None
        except PluginError as exc:
            error = str(exc)
        dist = ep.dist.name if ep.dist is not None else None
        infos.append(PluginInfo(name=name, value=ep.value, distribution=dist, error=error))
    return infos


def _split(name: str, table: Mapping[str, Any]) -> tuple[Overrides, dict[str, Any], list[Problem]]:
    """The common keys validated, the rest of the table (for the plugin), and the problems."""
    rest = {k: v for k, v in table.items() if k not in COMMON_KEYS}
    try:
        common = _Common.model_validate({k: v for k, v in table.items() if k in COMMON_KEYS})
    except ValidationError as exc:
        return Overrides(), rest, format_errors(exc, ("dispatchers", name))
    return Overrides(common.level, common.timeout, common.max_attempts), rest, []


def _options(
    name: str, cls: type[EventBackend[Any]], table: dict[str, Any]
) -> tuple[BaseModel | None, list[Problem]]:
    if cls.Options is None:
        where = ("dispatchers", name)
        return None, [Problem((*where, k), f"dispatcher {name!r} takes no options") for k in table]
    try:
        return cls.Options.model_validate(table), []
    except ValidationError as exc:
        return None, format_errors(exc, ("dispatchers", name))


def table_problems(name: str, cls: type[EventBackend[Any]], table: Mapping[str, Any]) -> list[Problem]:
    """Every problem of ``[dispatchers.<name>]``: the common keys and the plugin's ``Options``."""
    _, rest, problems = _split(name, table)
    return problems + _options(name, cls, rest)[1]


def validate_options(
    name: str, cls: type[EventBackend[Any]], table: Mapping[str, Any]
) -> DispatcherSpec:
    """Validate ``[dispatchers.<name>]``; ``PluginError`` names every bad key."""
    found, rest, problems = _split(name, table)
    options, more = _options(name, cls, rest)
    if problems or more:
        raise PluginError("; ".join(str(p) for p in problems + more))
    return DispatcherSpec(name, cls, options, found)


def resolve(name: str, config: Config, found: dict[str, EntryPoint] | None = None) -> DispatcherSpec:
    """Find, load and configure one dispatcher; ``PluginError`` says why it cannot run."""
    found = discover() if found is None else found
    ep = found.get(name)
    if ep is None:
        raise PluginError(_not_installed(name, found))
    return validate_options(name, load(ep), config.dispatcher_table(name))


def _not_installed(name: str, found: Mapping[str, EntryPoint]) -> str:
    known = ", ".join(sorted(found)) or "none"
    return f"no dispatcher named {name!r} is installed (installed: {known})"


def check(config: Config) -> list[Problem]:
    """Problems that would stop an enabled dispatcher from running, or a present table validating."""
    return dispatcher_problems(config.dispatch.enabled, config.dispatchers)


def dispatcher_problems(enabled: Sequence[str], tables: Mapping[str, Any]) -> list[Problem]:
    """``check`` on raw data: ``dispatch.enabled`` and the ``dispatchers`` tables, as far as read.

    Enabled dispatchers must be installed and load; a table of an installed plugin must validate
    even if it is not enabled; a broken or absent plugin that is not enabled is no problem (so it
    can be switched off, or configured before it is installed).
    """
    found = discover()
    problems = []
    for name in sorted(set(enabled) | set(tables)):
        where = ("dispatchers", name)
        ep = found.get(name)
        if ep is None:
            if name in enabled:
                problems.append(Problem(where, _not_installed(name, found)))
            continue
        try:
            cls = load(ep)
        except PluginError as exc:
            if name in enabled:
                problems.append(Problem(where, str(exc)))
            continue
        table = tables.get(name, {})
        if isinstance(table, Mapping):  # otherwise the general validation names it
            problems.extend(table_problems(name, cls, table))
    twice = sorted({name for name in enabled if list(enabled).count(name) > 1})
    if twice:
        names = ", ".join(repr(name) for name in twice)
        problems.append(Problem(("dispatch", "enabled"), f"dispatcher {names} is named twice"))
    return problems
