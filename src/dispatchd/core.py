"""The dispatch core: the spool, one worker per enabled dispatcher, live reload, one snapshot.

It knows nothing of HTTP: the shell (``service``) serves it and the API translates its typed
errors. Tests can drive it without a server.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from . import registry, validation
from .config import Config
from .constants import EVENT_STORE
from .errors import (
    ConfigError,
    NoEventStore,
    NotEnabled,
    PluginError,
    Stopping,
    StoreUnavailable,
    UnknownDispatcher,
)
from .event_store import EventStore
from .models import Record, spool_json
from .reload import Plan, Reloader, ReloadResult, plan, watch
from .spool import DeadLetter, Spool
from .status import ConfigStatus, DispatcherStatus, Snapshot, SpoolStatus, readiness_problems
from .timefmt import rfc3339
from .workers import Policy, Stats, Worker

log = logging.getLogger(__name__)


class Core:
    """What the daemon does, apart from how it is reached."""

    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        spool = config.spool
        self.spool = Spool(spool.path, spool.sync, spool.max_events, spool.reserve_bytes)
        self.workers: dict[str, Worker] = {}
        self.failures: dict[str, str] = {}  # enabled dispatchers that could not be built
        self.stats: dict[str, Stats] = {}  # per dispatcher, kept across restarts and disables
        self.accepted = 0
        self.stopping = False
        self.generation = 1
        self.loaded_at = time.time()
        self.last_reload_error: str | None = None
        self.restart_required: tuple[str, ...] = ()
        self.reloader = Reloader(self.reload)
        self._background: list[asyncio.Task[None]] = []
        self._watch_stop = asyncio.Event()

    # -- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool (taking its lock first), retire what was disabled while stopped, start
        a worker per enabled dispatcher, then watch the config file."""
        await self.spool.open()
        await self._retire_disabled()
        for name in self.config.dispatch.enabled:
            await self._start_dispatcher(name)
        self._background.append(asyncio.create_task(self.reloader.run(), name="reloader"))
        if self.config_path is not None:
            watcher = watch(Path(self.config_path), self.reloader.request, self._watch_stop)
            self._background.append(asyncio.create_task(watcher, name="config-watcher"))

    def cancel_workers(self) -> None:
        """Abandon the batches in hand (a second signal); cursors are still committed."""
        for worker in self.workers.values():
            worker.cancel()

    async def stop(self, grace: float) -> None:
        """Stop reloads, let workers finish their batch (``grace`` s), close the spool.

        Each step runs even if an earlier one failed, so a worker that fails to stop never
        leaves the spool open.
        """
        self.stopping = True
        await run_steps(
            ("stop reloads", self._stop_background),
            ("stop workers", lambda: self._stop_workers(grace)),
            ("close the spool", self.spool.close),
        )

    async def _stop_background(self) -> None:
        self._watch_stop.set()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def _stop_workers(self, grace: float) -> None:
        results = await asyncio.gather(*(w.stop(grace) for w in self.workers.values()),
                                       return_exceptions=True)
        for worker, result in zip(self.workers.values(), results, strict=True):
            if isinstance(result, BaseException):
                log.error("dispatcher %s: stop failed: %r", worker.name, result,
                          extra={"dispatcher": worker.name})

    async def _retire_disabled(self) -> None:
        enabled = set(self.config.dispatch.enabled)
        for name in sorted(set(self.spool.cursors) - enabled):
            moved = await self.spool.retire_cursor(name, "dispatcher was disabled while stopped")
            if moved:
                log.warning("dispatcher %s is no longer enabled: %d undelivered events moved to "
                            "its dead letters", name, moved, extra={"dispatcher": name})

    async def _start_dispatcher(self, name: str) -> None:
        # The cursor exists before ingest opens, whether or not the plugin loads: what is
        # accepted from now on is owed to this dispatcher and must not be compacted away.
        await self.spool.ensure_cursor(name)
        try:
            spec = registry.resolve(name, self.config)
            backend = spec.build()
        except PluginError as exc:
            self._failed(name, str(exc))
            return
        except Exception as exc:  # a plugin's constructor is foreign code
            self._failed(name, f"construction failed: {type(exc).__name__}: {exc}")
            return
        worker = Worker(name, backend, self.spool, self._policy(name))
        worker.stats = self.stats.setdefault(name, Stats())
        self.workers[name] = worker
        worker.start()
        log.info("dispatcher %s enabled (%s:%s)", name, spec.cls.__module__, spec.cls.__name__,
                 extra={"dispatcher": name})

    def _failed(self, name: str, error: str) -> None:
        # Reported and skipped; its cursor keeps what it is owed until it is fixed.
        self.failures[name] = error
        log.error("dispatcher %s cannot run: %s", name, error, extra={"dispatcher": name})

    def _policy(self, name: str) -> Policy:
        return Policy.of(self.config, registry.overrides(self.config, name))

    # -- live reload ---------------------------------------------------------------------------

    async def reload(self, reason: str = "requested") -> ReloadResult:
        """Validate the whole file, then apply it as a diff; an invalid file changes nothing."""
        if self.config_path is None:
            return ReloadResult(False, self.generation, error="no config file to reload")
        log.info("reloading %s (%s)", self.config_path, reason)
        importlib.invalidate_caches()  # a plugin installed since start must be importable
        try:
            new = validation.load(self.config_path)
        except ConfigError as exc:
            self.last_reload_error = str(exc)
            log.error("reload rejected, running config unchanged: %s", exc)
            return ReloadResult(False, self.generation, error=str(exc), problems=exc.problems)
        changes = plan(self.config, new, set(self.failures))
        # [server], [spool] and [log] are bound at start-up; keep them until a restart.
        self.config = new.model_copy(update={"server": self.config.server,
                                             "spool": self.config.spool, "log": self.config.log})
        await self._apply(changes)
        self.generation += 1
        self.loaded_at = time.time()
        self.last_reload_error = None
        self.restart_required = changes.restart_required
        log.info("reload %d applied: %s", self.generation, changes.describe())
        if changes.restart_required:
            log.warning("restart required to apply: %s", ", ".join(changes.restart_required))
        return ReloadResult(True, self.generation, plan=changes)

    async def _apply(self, changes: Plan) -> None:
        await asyncio.gather(*(self._disable(name) for name in changes.stop))
        for name in changes.restart:
            worker = self.workers.pop(name, None)
            if worker is not None:
                await worker.stop(self.config.server.shutdown_timeout)
            self.failures.pop(name, None)
            await self._start_dispatcher(name)
        for name in changes.start:
            await self._start_dispatcher(name)
        for name, worker in self.workers.items():
            worker.policy = self._policy(name)

    async def _disable(self, name: str) -> None:
        """Deliver what was accepted while enabled (bounded), dead-letter the rest, release."""
        upto = self.spool.head
        worker = self.workers.pop(name, None)
        self.failures.pop(name, None)
        drain = self.config.dispatch.drain_timeout
        if worker is not None:
            drained = await worker.drain(upto, drain)
            await worker.stop(grace=0.0)
            if not drained:
                log.warning("dispatcher %s: drain timed out after %.1fs", name, drain,
                            extra={"dispatcher": name})
        moved = await self.spool.retire_cursor(name, "dispatcher disabled before delivery", upto)
        if moved:
            log.warning("dispatcher %s disabled: %d undelivered events moved to its dead letters",
                        name, moved, extra={"dispatcher": name})
        log.info("dispatcher %s disabled", name, extra={"dispatcher": name})

    # -- ingest and delivery ---------------------------------------------------------------------

    async def ingest(self, records: Sequence[Record]) -> list[int]:
        """Commit validated records to the spool; returns once they are durable."""
        if self.stopping:
            raise Stopping("dispatchd is shutting down")
        # Every field that can be None defaults to None: leaving them out is lossless, and keeps
        # rows small now that a record may carry all of Senlin's attributes. A request's records
        # share one spool row.
        rows = [(r.level, spool_json(r)) for r in records]
        seqs = await self.spool.append(rows, records, together=True)
        self.accepted += len(seqs)
        return seqs

    def filtered_counts(self, records: Sequence[Record]) -> dict[str, int]:
        """Per enabled dispatcher that runs: how many of ``records`` its filters leave out."""
        return {name: sum(not worker.policy.wants(r) for r in records)
                for name, worker in self.workers.items()}

    async def wait_delivered(
        self, first: int, last: int, filtered: dict[str, int], timeout: float
    ) -> dict[str, dict[str, Any]]:
        """Per enabled dispatcher: has it handled seqs ``first..last`` within ``timeout``, and how."""

        async def one(name: str) -> tuple[str, dict[str, Any]]:
            worker = self.workers.get(name)
            if worker is None:
                return name, {"status": "failed", "error": self.failures.get(name)}
            if not await worker.wait_for_cursor(last, timeout):
                return name, {"status": "pending", "error": worker.stats.last_error}
            return name, {"status": "delivered", "filtered": filtered.get(name, 0)}

        results = dict(await asyncio.gather(*(one(n) for n in self.config.dispatch.enabled)))
        for name, count in (await self.spool.dead_lettered_between(first, last)).items():
            if results.get(name, {}).get("status") == "delivered":
                results[name] = {"status": "dead_lettered", "count": count,
                                 "error": self.workers[name].stats.last_error}
        return results

    # -- dead letters --------------------------------------------------------------------------

    async def dead_letters(self, name: str | None, after: int, limit: int) -> list[DeadLetter]:
        if name is not None:
            await self._check_known(name)
        return await self.spool.dead_letters(name, after, limit)

    async def replay_dead_letters(self, name: str) -> int:
        """Send ``name``'s dead letters back to ``name`` only; returns how many."""
        await self._check_known(name)
        if name not in self.config.dispatch.enabled:
            raise NotEnabled(f"dispatcher {name!r} is not enabled; enable it first")
        letters = await self.spool.dead_letters(name)
        levels = [json.loads(letter.row.body)["level"] for letter in letters]
        replayed = await self.spool.replay(name, letters, levels)
        log.info("dispatcher %s: %d dead letters replayed", name, replayed,
                 extra={"dispatcher": name})
        return replayed

    async def purge_dead_letters(self, name: str) -> int:
        await self._check_known(name)
        return await self.spool.purge_dead_letters(name)

    async def _check_known(self, name: str) -> None:
        """A name that is not configured and holds no dead letters is a typo, not an empty list."""
        known = set(self.config.dispatch.enabled) | set(self.config.dispatchers) | set(self.stats)
        if name not in known and name not in await self.spool.dead_letter_counts():
            raise UnknownDispatcher(f"no dispatcher named {name!r} is configured or has dead "
                                    f"letters (configured: {', '.join(sorted(known)) or 'none'})")

    # -- the event store -------------------------------------------------------------------------

    def event_store(self) -> EventStore:
        """The ``database`` dispatcher, for the query API; it reads on connections of its own."""
        if EVENT_STORE not in self.config.dispatch.enabled:
            raise NoEventStore(f"the {EVENT_STORE} dispatcher is not enabled (dispatch.enabled), "
                               "so there is no event store to query")
        worker = self.workers.get(EVENT_STORE)
        if worker is None:
            raise StoreUnavailable(f"the {EVENT_STORE} dispatcher cannot run: "
                                   f"{self.failures.get(EVENT_STORE, 'not started')}")
        if not isinstance(worker.backend, EventStore):
            raise NoEventStore(f"the dispatcher named {EVENT_STORE} "
                               f"({type(worker.backend).__name__}) cannot be queried")
        return worker.backend

    # -- the snapshot --------------------------------------------------------------------------

    def readiness_problems(self) -> list[str]:
        """Cheap enough for every probe: no query."""
        return readiness_problems(self.stopping, self._spool_status())

    async def snapshot(self) -> Snapshot:
        # A closed spool (after shutdown, or a start that failed) answers from memory only.
        dead = await self.spool.dead_letter_counts() if self.spool.is_open else {}
        enabled = self.config.dispatch.enabled
        others = sorted((set(self.config.dispatchers) | set(self.stats)) - set(enabled))
        dispatchers = [await self._dispatcher(name, dead.get(name, 0)) for name in enabled]
        dispatchers += [self._disabled(name, dead.get(name, 0)) for name in others]
        return Snapshot(self.config.server.instance, self.accepted, self.stopping,
                        self._spool_status(), self._config_status(), tuple(dispatchers))

    async def _dispatcher(self, name: str, dead_letters: int) -> DispatcherStatus:
        worker = self.workers.get(name)
        # The worker's own cursor runs ahead of the committed one by up to one lazy commit.
        cursor = worker.cursor if worker is not None and worker.cursor else \
            self.spool.cursors.get(name, self.spool.head)
        backlog = max(0, self.spool.head - cursor)
        lag = 0.0
        if backlog > 0 and self.spool.is_open \
                and (oldest := await self.spool.oldest_accepted(cursor)) is not None:
            lag = max(0.0, time.time() - oldest)
        stats = self.stats.get(name, Stats())
        state = worker.state if worker is not None else "failed"
        error = stats.last_error if worker is not None else self.failures.get(name)
        return DispatcherStatus(
            name, True, state, backlog, stats.delivered, stats.skipped, stats.failed,
            stats.dead_lettered, dead_letters, error, round(lag, 3),
            worker.report() if worker is not None else {},
        )

    def _disabled(self, name: str, dead_letters: int) -> DispatcherStatus:
        stats = self.stats.get(name, Stats())
        return DispatcherStatus(name, False, "stopped", 0, stats.delivered, stats.skipped,
                                stats.failed, stats.dead_lettered, dead_letters, stats.last_error)

    def _spool_status(self) -> SpoolStatus:
        s = self.spool
        return SpoolStatus(
            str(s.path), s.is_open, s.backlog, s.max_events, s.is_full(), s.commits,
            len(s.quarantined), s.free_bytes, s.reserve_bytes, s.low_space,
        )

    def _config_status(self) -> ConfigStatus:
        return ConfigStatus(self.generation, self.config_path, rfc3339(self.loaded_at),
                            self.last_reload_error, self.restart_required,
                            self.config.dispatch.enabled)


async def run_steps(*steps: tuple[str, Callable[[], Awaitable[None]]]) -> None:
    """Run every step in order even if one fails (each failure is logged); shutdown's rule."""
    for what, step in steps:
        try:
            await step()
        except Exception:
            log.exception("shutdown: %s failed; going on", what)
