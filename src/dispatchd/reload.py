"""Live reload: what triggers it, how requests coalesce, and what a new config changes.

Triggers (a file change, SIGHUP, ``POST /v1/config/reload``) only *request* a reload. One task
applies them, one at a time; requests that arrive while a reload runs are answered together by
the next one. ``plan`` is pure: it compares two validated configs and says which dispatchers to
start, drain and stop, or restart; ``Core.reload`` carries the plan out.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from watchfiles import awatch

from .config import Config
from .errors import Problem
from .registry import COMMON_KEYS

log = logging.getLogger(__name__)

WATCH_DEBOUNCE_MS = 200  # a change is applied well within a second
RESTART_SECTIONS = ("server", "spool")


@dataclass(frozen=True)
class Plan:
    """What a new config changes among the dispatchers, and what waits for a restart."""

    start: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()
    restart_required: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [f"{verb} {', '.join(names)}" for verb, names in
                 (("enabled", self.start), ("disabled", self.stop), ("restarted", self.restart))
                 if names]
        return "; ".join(parts) or "no dispatcher changed"


@dataclass
class ReloadResult:
    ok: bool
    generation: int
    plan: Plan = field(default_factory=Plan)
    error: str | None = None
    problems: list[Problem] = field(default_factory=list)


def plan(old: Config, new: Config, failed: set[str]) -> Plan:
    """Compare two configs; ``failed`` dispatchers that stay enabled are tried again."""
    was, now = set(old.dispatch.enabled), set(new.dispatch.enabled)
    kept = [name for name in new.dispatch.enabled if name in was]
    restart = [n for n in kept if n in failed or _options(old, n) != _options(new, n)]
    changed = [
        f"{section}.{key}"
        for section in RESTART_SECTIONS
        for key, value in getattr(new, section)
        if getattr(getattr(old, section), key) != value
    ]
    return Plan(
        start=tuple(n for n in new.dispatch.enabled if n not in was),
        stop=tuple(n for n in old.dispatch.enabled if n not in now),
        restart=tuple(restart),
        restart_required=tuple(changed),
    )


def _options(config: Config, name: str) -> dict[str, object]:
    # The common keys (level, timeout, max_attempts) are the worker's policy: they are applied
    # to the running worker, not by restarting it.
    return {k: v for k, v in config.dispatcher_table(name).items() if k not in COMMON_KEYS}


def digest(path: Path) -> bytes | None:
    """The content hash of the file a path resolves to now (through any symlink swap)."""
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


class Reloader:
    """Serialises and coalesces reload requests; one ``apply`` runs at a time."""

    def __init__(self, apply: Callable[[str], Awaitable[ReloadResult]]) -> None:
        self._apply = apply
        self._waiting: list[tuple[str, asyncio.Future[ReloadResult]]] = []
        self._wake = asyncio.Event()

    def request(self, reason: str) -> asyncio.Future[ReloadResult]:
        """Ask for a reload; the future gets the result of the first reload that starts after."""
        future: asyncio.Future[ReloadResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((reason, future))
        self._wake.set()
        return future

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            waiting, self._waiting = self._waiting, []
            reasons = ", ".join(dict.fromkeys(reason for reason, _ in waiting))
            result = await self._apply(reasons)
            for _, future in waiting:
                if not future.done():
                    future.set_result(result)


async def watch(path: Path, on_change: Callable[[str], object], stop: asyncio.Event) -> None:
    """Call ``on_change`` when the file's content changes, however it was replaced.

    Directories are watched, not the file: editors and Kubernetes ConfigMaps replace the file by
    rename or symlink swap, which a watch on the old inode would never see. Both the directory of
    the path and that of the file it resolves to are watched, and the watch follows a swap.
    """
    last = digest(path)
    while not stop.is_set():
        directories = {path.absolute().parent, path.resolve().parent}
        try:
            async for _ in awatch(*directories, watch_filter=None, debounce=WATCH_DEBOUNCE_MS,
                                  stop_event=stop, recursive=False):
                now = digest(path)
                if now is not None and now != last:
                    last = now
                    on_change("file changed")
                if path.resolve().parent not in directories:
                    break  # a symlink swap moved the file: watch where it lives now
        except OSError as exc:  # a directory vanished mid-swap: look again shortly
            log.warning("watching %s: %s", path, exc)
            await asyncio.sleep(1.0)
