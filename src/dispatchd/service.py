"""Lifecycle in one place: start order, signal handling, graceful drain and shutdown order.

``serve()`` reads like the story (uvicorn's ``Server._serve``): install signal handlers, start
up, wait for the stop request, shut down. Shutdown stops listening first, then lets each worker
finish the batch in hand and commit its cursor, then closes dispatchers, then the spool.
A second SIGINT/SIGTERM skips the wait: workers are cancelled, cursors still committed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from . import registry
from .api import make_app
from .config import Config
from .errors import DispatchdError, PluginError
from .models import Record
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

    async def shutdown(self) -> None:
        self.stopping = True
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
        self._runner = web.AppRunner(make_app(self), access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, server.host, server.port)
        try:
            await site.start()
        except OSError as exc:
            raise DispatchdError(f"cannot listen on {server.host}:{server.port}: {exc}") from None
        sockets = self._runner.addresses
        self.port = sockets[0][1] if sockets else server.port
        log.info("listening on http://%s:%d", server.host, self.port)

    # -- signals -------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in HANDLED_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in HANDLED_SIGNALS:
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

    # -- what the API asks -----------------------------------------------------------------

    async def ingest(self, records: Sequence[Record]) -> list[int]:
        """Commit validated records to the spool; returns once they are durable."""
        return await self.spool.append([(r.level, r.model_dump_json()) for r in records])

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


async def run(config: Config, config_path: str | None = None) -> None:
    """Serve until a signal; the CLI's entry."""
    await Service(config, config_path).serve()
