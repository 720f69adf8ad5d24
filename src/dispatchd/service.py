"""Lifecycle in one place: start order, signal handling, graceful drain and shutdown order.

``serve()`` reads like the story (uvicorn's ``Server._serve``): install signal handlers, start
up, wait for the stop request, shut down. Shutdown stops listening first, then lets each worker
finish the batch in hand and commit its cursor, then closes dispatchers, then the spool.
A second SIGINT/SIGTERM skips the wait: workers are cancelled, cursors still committed.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import logging
import signal
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from . import config as config_file
from . import registry
from .api import make_app
from .config import Config
from .errors import ApiError, ConfigError, DispatchdError, PluginError
from .metrics import Counters, Metrics
from .models import Record
from .reload import Plan, Reloader, ReloadResult, plan, watch
from .spool import Spool
from .workers import Policy, Worker

log = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Service:
    """The daemon: one spool, one worker per enabled dispatcher, one HTTP server."""

    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.spool = Spool(config.spool.path, config.spool.sync, config.spool.max_events)
        self.workers: dict[str, Worker] = {}
        self.failures: dict[str, str] = {}  # enabled dispatchers that could not be built
        self.stopping = False
        self.force_exit = False
        self.port: int | None = None
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.generation = 1
        self.loaded_at = datetime.now(UTC)
        self.last_reload_error: str | None = None
        self.restart_required: tuple[str, ...] = ()
        self.reloader = Reloader(self.reload)
        self.counters = Counters()
        self.metrics = Metrics(self)
        self._background: list[asyncio.Task[None]] = []
        self._watch_stop = asyncio.Event()

    # -- the story -----------------------------------------------------------------------------

    async def serve(self, handle_signals: bool = True) -> None:
        """Run until SIGINT/SIGTERM (or ``request_stop``), then shut down in order."""
        if handle_signals:
            self._install_signal_handlers()
        try:
            await self.startup()
            await self._stop.wait()
        finally:
            await self.shutdown()
            if handle_signals:
                self._remove_signal_handlers()

    async def startup(self) -> None:
        await self.spool.open()
        await self._retire_disabled()
        for name in self.config.dispatch.enabled:
            await self._start_dispatcher(name)
        await self._start_http()
        self._background.append(asyncio.create_task(self.reloader.run(), name="reloader"))
        if self.config_path is not None:
            watcher = watch(Path(self.config_path), self.reloader.request, self._watch_stop)
            self._background.append(asyncio.create_task(watcher, name="config-watcher"))

    async def shutdown(self) -> None:
        self.stopping = True
        self._watch_stop.set()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()  # stops listening, then waits for requests in flight
            self._runner = None
        grace = 0.0 if self.force_exit else self.config.server.shutdown_timeout
        await asyncio.gather(*(worker.stop(grace) for worker in self.workers.values()))
        totals = self._totals()
        await self.spool.close()
        log.info(
            "stopped ◆ %d delivered ◆ %d failed attempts ◆ %d dead-lettered ◆ %d left in the spool",
            totals["delivered"], totals["failed"], totals["dead_lettered"], self.spool.backlog,
        )

    def request_stop(self) -> None:
        self._stop.set()

    # -- start-up steps ----------------------------------------------------------------------

    async def _retire_disabled(self) -> None:
        enabled = set(self.config.dispatch.enabled)
        for name in sorted(set(self.spool.cursors) - enabled):
            moved = await self.spool.retire_cursor(name, "dispatcher was disabled while stopped")
            if moved:
                log.warning(
                    "dispatcher %s is no longer enabled: %d undelivered events moved to its "
                    "dead letters", name, moved,
                )

    async def _start_dispatcher(self, name: str) -> None:
        # The cursor exists before ingest opens, whether or not the plugin loads: what is
        # accepted from now on is owed to this dispatcher and must not be compacted away.
        await self.spool.ensure_cursor(name)
        try:
            spec = registry.resolve(name, self.config)
        except PluginError as exc:
            # Reported and skipped; its cursor keeps what it is owed until it is fixed.
            self.failures[name] = str(exc)
            log.error("dispatcher %s cannot run: %s", name, exc)
            return
        try:
            backend = spec.build()
        except Exception as exc:  # a plugin's constructor is foreign code
            self.failures[name] = f"construction failed: {type(exc).__name__}: {exc}"
            log.error("dispatcher %s cannot run: %s", name, self.failures[name])
            return
        worker = Worker(name, backend, self.spool, Policy.of(self.config, spec.level))
        self.workers[name] = worker
        worker.start()
        log.info("dispatcher %s enabled (%s)", name, f"{spec.cls.__module__}:{spec.cls.__name__}")

    async def _start_http(self) -> None:
        server = self.config.server
        try:
            app = make_app(self)
            tls = _tls_context(server.tls_cert, server.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise DispatchdError(f"cannot set up the HTTP server: {exc}") from None
        # lingering_time: how long an unread request body is drained after an early answer.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0,
                                     keepalive_timeout=server.idle_timeout, lingering_time=1.0)
        await self._runner.setup()
        _cap_connections(self._runner.server, server.max_connections)
        site = web.TCPSite(self._runner, server.host, server.port, ssl_context=tls)
        try:
            await site.start()
        except OSError as exc:
            raise DispatchdError(f"cannot listen on {server.host}:{server.port}: {exc}") from None
        sockets = self._runner.addresses
        self.port = sockets[0][1] if sockets else server.port
        log.info("listening on %s://%s:%d (%s event loop)", "https" if tls else "http",
                 server.host, self.port, type(asyncio.get_running_loop()).__module__.split(".")[0])

    # -- signals -------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in HANDLED_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reloader.request, "SIGHUP")

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (*HANDLED_SIGNALS, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            log.warning("received %s again: forcing exit", sig.name)
            self.force_exit = True
            for worker in self.workers.values():
                worker.cancel()
            return
        log.info("received %s: shutting down", sig.name)
        self.stopping = True
        self._stop.set()

    # -- live reload ---------------------------------------------------------------------------

    async def reload(self, reason: str = "requested") -> ReloadResult:
        """Validate the whole file, then apply it as a diff; an invalid file changes nothing."""
        if self.config_path is None:
            return ReloadResult(False, self.generation, error="no config file to reload")
        log.info("reloading %s (%s)", self.config_path, reason)
        importlib.invalidate_caches()  # a plugin installed since start must be importable
        try:
            new = config_file.load(self.config_path)
            problems = registry.check(new)
            if problems:
                raise ConfigError(self.config_path, problems)
        except ConfigError as exc:
            self.last_reload_error = str(exc)
            log.error("reload rejected, running config unchanged: %s", exc)
            return ReloadResult(False, self.generation, error=str(exc), problems=exc.problems)
        changes = plan(self.config, new, set(self.failures))
        # [server] and [spool] are bound at start-up; keep them until a restart.
        self.config = new.model_copy(update={"server": self.config.server,
                                             "spool": self.config.spool})
        await self._apply(changes)
        self.generation += 1
        self.loaded_at = datetime.now(UTC)
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
            worker.policy = Policy.of(self.config, registry.own_level(self.config, name))

    async def _disable(self, name: str) -> None:
        """Deliver what was accepted while enabled (bounded), dead-letter the rest, release."""
        upto = self.spool.head
        worker = self.workers.pop(name, None)
        self.failures.pop(name, None)
        if worker is not None:
            drained = await worker.drain(upto, self.config.dispatch.drain_timeout)
            await worker.stop(grace=0.0)
            if not drained:
                log.warning("dispatcher %s: drain timed out after %.1fs", name,
                            self.config.dispatch.drain_timeout)
        moved = await self.spool.retire_cursor(name, "dispatcher disabled before delivery", upto)
        if moved:
            log.warning("dispatcher %s disabled: %d undelivered events moved to its dead letters",
                        name, moved)
        log.info("dispatcher %s disabled", name)

    def config_status(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "path": self.config_path,
            "loaded_at": self.loaded_at.isoformat(),
            "last_reload_error": self.last_reload_error,
            "restart_required": list(self.restart_required),
            "enabled": list(self.config.dispatch.enabled),
        }

    # -- what the API asks -----------------------------------------------------------------

    async def ingest(self, records: Sequence[Record]) -> list[int]:
        """Commit validated records to the spool; returns once they are durable."""
        seqs = await self.spool.append([(r.level, r.model_dump_json()) for r in records], records)
        self.counters.accepted += len(seqs)
        return seqs

    async def wait_delivered(
        self, records: Sequence[Record], seqs: Sequence[int], timeout: float
    ) -> dict[str, dict[str, Any]]:
        """Per enabled dispatcher: has it handled these records within ``timeout``, and how."""
        first, last = seqs[0], seqs[-1]

        async def one(name: str) -> tuple[str, dict[str, Any]]:
            worker = self.workers.get(name)
            if worker is None:
                return name, {"status": "failed", "error": self.failures.get(name)}
            if not await worker.wait_for_cursor(last, timeout):
                return name, {"status": "pending", "error": worker.stats.last_error}
            filtered = sum(not worker.policy.wants(r) for r in records)
            return name, {"status": "delivered", "filtered": filtered}

        results = dict(await asyncio.gather(*(one(n) for n in self.config.dispatch.enabled)))
        for name, count in (await self.spool.dead_lettered_between(first, last)).items():
            if results.get(name, {}).get("status") == "delivered":
                results[name] = {"status": "dead_lettered", "count": count,
                                 "error": self.workers[name].stats.last_error}
        return results

    async def replay_dead_letters(self, name: str) -> int:
        """Send ``name``'s dead letters back to ``name`` only; returns how many."""
        if name not in self.config.dispatch.enabled:
            raise ApiError(409, "not_enabled", f"dispatcher {name!r} is not enabled; enable it first")
        letters = await self.spool.dead_letters(name)
        levels = [json.loads(letter.row.body)["level"] for letter in letters]
        replayed = await self.spool.replay(name, letters, levels)
        log.info("dispatcher %s: %d dead letters replayed", name, replayed)
        return replayed

    def readiness_problems(self) -> list[str]:
        problems = []
        if self.stopping:
            problems.append("shutting down")
        if not self.spool.is_open:
            problems.append("spool not open")
        elif self.spool.is_full():
            problems.append(f"spool full ({self.spool.backlog} of {self.spool.max_events})")
        return problems

    async def dispatcher_status(self) -> list[dict[str, Any]]:
        dead = await self.spool.dead_letter_counts()
        out = []
        for name in self.config.dispatch.enabled:
            cursor = self.spool.cursors.get(name, self.spool.head)
            entry: dict[str, Any] = {
                "name": name, "enabled": True, "backlog": self.spool.head - cursor,
                "dead_letters": dead.get(name, 0),
            }
            worker = self.workers.get(name)
            if worker is None:
                entry.update(state="failed", last_error=self.failures.get(name))
            else:
                entry.update(state=worker.state, **vars(worker.stats))
            out.append(entry)
        for name in sorted(set(self.config.dispatchers) - set(self.config.dispatch.enabled)):
            out.append({"name": name, "enabled": False, "state": "stopped", "backlog": 0,
                        "dead_letters": dead.get(name, 0)})
        return out

    def _totals(self) -> dict[str, int]:
        totals = {"delivered": 0, "failed": 0, "dead_lettered": 0}
        for worker in self.workers.values():
            for key in totals:
                totals[key] += getattr(worker.stats, key)
        return totals


def _cap_connections(server: web.Server | None, cap: int) -> None:
    """Close connections beyond ``cap`` as soon as they are accepted."""
    assert server is not None
    accept = server.connection_made

    def connection_made(handler: Any, transport: asyncio.Transport) -> None:
        accept(handler, transport)
        if len(server.connections) > cap:
            log.warning("connection limit %d reached: closing a new connection", cap)
            transport.abort()

    server.connection_made = connection_made  # type: ignore[method-assign]


def _tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


# Validating a record allocates dozens of objects, so with the default threshold (700) the cyclic
# collector ran every few records and rescanned everything alive, the records in the spool's
# memory window included: a quarter of ingest's time (docs/performance.md). Reference counting
# frees almost all of it anyway; cycles are rare here.
GC_THRESHOLDS = (50_000, 20, 100)


async def run(config: Config, config_path: str | None = None) -> None:
    """Serve until a signal; the CLI's entry. The process is dispatchd's own, so it tunes the
    collector: what start-up imported is frozen out of it, and collections are rarer."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    await Service(config, config_path).serve()
