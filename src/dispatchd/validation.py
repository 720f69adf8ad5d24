"""A config file's problems in one pass: its general keys and every dispatcher's table at once.

``config.parse`` stops at the general keys; here the ``dispatch.enabled`` list and the
``dispatchers`` tables are read from the raw file as well, so a file with a bad port *and* a
misspelt plugin option *and* a plugin that is not installed names all three.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import registry
from .config import Config, DispatchConfig, expand_env, format_errors
from .errors import ConfigError, Problem


def load(path: str | Path) -> Config:
    """Read and validate the file, plugins included; ``ConfigError`` lists every problem."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(where, [Problem((), f"cannot read: {exc}")]) from None
    return parse(text, where)


def parse(text: str, path: str = "<string>") -> Config:
    """``load`` on TOML text."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [Problem((), f"invalid TOML: {exc}")]) from None
    unset: list[Problem] = []
    raw = _expand(raw, (), unset)
    try:
        config: Config | None = Config.model_validate(raw)
        problems = []
    except ValidationError as exc:
        config = None
        problems = format_errors(exc)
    if config is not None:
        problems.extend(plugin_problems(config))
    else:
        problems.extend(registry.dispatcher_problems(*_readable_dispatchers(raw)))
    # A key whose variable is unset is named for that alone, not also for its "${...}" text.
    problems = unset + [p for p in problems if p.loc not in {u.loc for u in unset}]
    if problems or config is None:
        raise ConfigError(path, problems)
    return config


def plugin_problems(config: Config) -> list[Problem]:
    """What would keep an enabled dispatcher from running, or a present table from validating.

    For ``dispatchd serve``, which starts despite these: it warns and the dispatcher shows failed.
    """
    return registry.check(config)


def _readable_dispatchers(raw: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """``dispatch.enabled`` and the ``dispatchers`` tables, as far as they can be read."""
    dispatch = raw.get("dispatch", {})
    default = DispatchConfig.model_fields["enabled"].default
    enabled = dispatch.get("enabled", list(default)) if isinstance(dispatch, dict) else []
    names = [name for name in enabled if isinstance(name, str)] if isinstance(enabled, list) else []
    tables = raw.get("dispatchers")
    return names, dict(tables) if isinstance(tables, dict) else {}


def _expand(value: Any, loc: tuple[str | int, ...], problems: list[Problem]) -> Any:
    """``config.expand_env`` leaf by leaf, so that every unset variable is named, not the first."""
    if isinstance(value, dict):
        return {k: _expand(v, (*loc, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, (*loc, i), problems) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    try:
        return expand_env(value)
    except ConfigError as exc:
        problems.extend(Problem(loc, p.msg) for p in exc.problems)
        return value
