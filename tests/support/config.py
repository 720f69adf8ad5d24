"""Test configs as data: the defaults every test starts from, deep-merged overrides, TOML out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import tomli_w


def config_data(tmp: Path, enabled: Iterable[str], port: int = 0, **sections: Any) -> dict[str, Any]:
    """A config for ``tmp`` with ``enabled`` dispatchers and fast retries; each keyword is a
    table (``server={...}``, ``dispatchers={"message": {...}}``) merged over the defaults."""
    defaults: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "shutdown_timeout": 5.0},
        "spool": {"path": f"{tmp}/spool.db"},
        "dispatch": {
            "enabled": list(enabled),
            "level": "DEBUG",
            "backoff_initial": 0.05,
            "backoff_max": 0.2,
            "max_attempts": 3,
            "timeout": 5.0,
        },
        "dispatchers": {
            "database": {"url": f"sqlite:///{tmp}/events.db"},
            "jsonfile": {"path": f"{tmp}/events.jsonl"},
            "flaky": {"path": f"{tmp}/flaky.jsonl", "fail_file": f"{tmp}/flaky.down"},
            "slow": {"path": f"{tmp}/slow.txt"},
        },
    }
    return merge(defaults, sections)


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it, tables merged key by key; neither is changed."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def toml_text(data: Mapping[str, Any]) -> str:
    """``data`` as a TOML document, for ``dispatchd.config.parse``."""
    return tomli_w.dumps(data)


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as TOML to ``path`` (replaced whole) and return the path."""
    path.write_text(toml_text(data), encoding="utf-8")
    return path
