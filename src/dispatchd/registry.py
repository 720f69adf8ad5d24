"""Discovers dispatchers in the ``dispatchd.dispatchers`` entry-point group and builds them.

Like stevedore, entry points are filtered by name before ``load()`` and a plugin that fails is
reported and skipped; like pluggy, a malformed plugin is rejected at load with a clear error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from .backend import EventBackend
from .config import Config, format_errors
from .constants import ENTRY_POINT_GROUP
from .errors import PluginError
from .models import parse_level

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class PluginInfo:
    """What ``dispatchd plugins`` shows for one entry point."""

    name: str
    value: str
    distribution: str | None
    error: str | None


@dataclass(frozen=True)
class DispatcherSpec:
    """A dispatcher ready to build: its class, validated options and own minimum level."""

    name: str
    cls: type[EventBackend]
    options: BaseModel | None
    level: int | None

    def build(self) -> EventBackend:
        return self.cls(self.name, self.options)


def own_level(config: Config, name: str) -> int | None:
    """A dispatcher's own ``level`` option, if its table sets one (already validated)."""
    table = config.dispatcher_table(name)
    return parse_level(table["level"]) if "level" in table else None


def discover() -> dict[str, EntryPoint]:
    """Every entry point of the group, by name; rescanned at each call."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found and found[ep.name].value != ep.value:
            log.warning("dispatcher %r is registered twice; using %s", ep.name, found[ep.name].value)
            continue
        found.setdefault(ep.name, ep)
    return found


def load(ep: EntryPoint) -> type[EventBackend]:
    """Import an entry point and check it is an ``EventBackend`` subclass with a usable ``Options``."""
    try:
        obj = ep.load()
    except Exception as exc:  # any import-time failure of foreign code is the plugin's error
        raise PluginError(f"dispatcher {ep.name!r} ({ep.value}) failed to import: {exc!r}") from exc
    if not (isinstance(obj, type) and issubclass(obj, EventBackend)):
        raise PluginError(f"dispatcher {ep.name!r} ({ep.value}) is not an EventBackend subclass")
    options = obj.Options
    if options is not None and not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise PluginError(f"dispatcher {ep.name!r}: Options must be a pydantic BaseModel subclass")
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


def validate_options(name: str, cls: type[EventBackend], table: dict[str, Any]) -> DispatcherSpec:
    """Validate ``[dispatchers.<name>]`` against the plugin's ``Options`` and the common keys."""
    table = dict(table)
    try:
        level = parse_level(table.pop("level")) if "level" in table else None
    except ValueError as exc:
        raise PluginError(f"dispatchers.{name}.level: {exc}") from None
    if cls.Options is None:
        if table:
            keys = ", ".join(f"dispatchers.{name}.{key}" for key in sorted(table))
            raise PluginError(f"{keys}: dispatcher {name!r} takes no options")
        return DispatcherSpec(name, cls, None, level)
    try:
        options = cls.Options.model_validate(table)
    except ValidationError as exc:
        raise PluginError("; ".join(str(p) for p in format_errors(exc, ("dispatchers", name)))) from None
    return DispatcherSpec(name, cls, options, level)


def resolve(name: str, config: Config, found: dict[str, EntryPoint] | None = None) -> DispatcherSpec:
    """Find, load and configure one dispatcher; ``PluginError`` says why it cannot run."""
    found = discover() if found is None else found
    ep = found.get(name)
    if ep is None:
        known = ", ".join(sorted(found)) or "none"
        raise PluginError(f"no dispatcher named {name!r} is installed (installed: {known})")
    return validate_options(name, load(ep), config.dispatcher_table(name))


def check(config: Config) -> list[str]:
    """Problems that would stop an enabled dispatcher from running, or a present table validating."""
    found = discover()
    problems = []
    for name in sorted(set(config.dispatch.enabled) | set(config.dispatchers)):
        enabled = name in config.dispatch.enabled
        if not enabled and name not in found:
            continue  # a table for a plugin not installed yet is allowed; it is not enabled
        try:
            cls = load(found[name]) if name in found else None
        except PluginError as exc:
            if enabled:
                problems.append(str(exc))
            continue  # a broken plugin that is not enabled must not block switching it off
        try:
            if cls is None:
                resolve(name, config, found)  # raises: not installed
            else:
                validate_options(name, cls, config.dispatcher_table(name))
        except PluginError as exc:
            problems.append(str(exc))
    if len(set(config.dispatch.enabled)) != len(config.dispatch.enabled):
        problems.append("dispatch.enabled: a dispatcher is named twice")
    return problems



