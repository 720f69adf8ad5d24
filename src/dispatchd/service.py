"""The process shell: signals, the HTTP server and TLS, the connection cap, GC tuning, and the
order of start-up and shutdown around the dispatch core.

``serve()`` reads like the story (uvicorn's ``Server._serve``): install signal handlers, start
up, wait for the stop request, shut down. Start-up binds the listening socket before the core
touches the spool, so a start that cannot serve (port taken, bad TLS file) changes nothing.
Shutdown stops listening first, then lets each worker finish the batch in hand and commit its
cursor, then closes the spool; every step runs even if an earlier one failed. A second
SIGINT/SIGTERM skips the wait: workers are cancelled, cursors still committed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import ssl
from typing import Any

from aiohttp import web

from . import logs
from .api import Context, make_app
from .budget import ByteBudget
from .config import Config
from .core import Core, run_steps
from .errors import DispatchdError
from .metrics import Metrics

log = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
LISTEN_BACKLOG = 1024
READ_BUFSIZE = 64 * 1024


class Service:
    """One daemon process: the core, and the HTTP server in front of it."""

    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.core = Core(config, config_path)
        server = config.server
        self.budget = ByteBudget(server.max_inflight_bytes, server.inflight_wait)
        self.metrics = Metrics(self.core, self.budget)
        self.port: int | None = None
        self.app: web.Application | None = None  # once started
        self.force_exit = False
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None
        self._started = False  # the core started: there is something to report at shutdown

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
        server = self.config.server
        tls = _tls_context(server.tls_cert, server.tls_key)
        self._sock = _bind(server.host, server.port)
        self.port = self._sock.getsockname()[1]
        await self.core.start()
        self._started = True
        url = await self._start_http(tls)
        if self.core.spool.lock is not None:  # where `dispatchd reload` finds this daemon
            self.core.spool.lock.publish(url)
        enabled = ", ".join(self.config.dispatch.enabled) or "none"
        log.info("dispatchd listening on %s (%s event loop) ◆ config %s ◆ spool %s ◆ enabled: %s",
                 url, type(asyncio.get_running_loop()).__module__.split(".")[0],
                 self.config_path or "(none)", self.core.spool.path, enabled)

    async def shutdown(self) -> None:
        self.core.stopping = True
        grace = 0.0 if self.force_exit else self.config.server.shutdown_timeout
        await run_steps(
            ("stop listening", self._stop_http),
            ("stop the core", lambda: self.core.stop(grace)),
        )
        if self._started:
            await self._log_totals()

    async def _log_totals(self) -> None:
        snapshot = await self.core.snapshot()
        per = ", ".join(f"{d.name} {d.delivered}/{d.failed}/{d.dead_lettered}"
                        for d in snapshot.dispatchers
                        if d.enabled or d.delivered or d.failed or d.dead_lettered)
        totals = snapshot.totals()
        log.info("stopped ◆ %d delivered ◆ %d failed attempts ◆ %d dead-lettered ◆ %d left in the "
                 "spool ◆ per dispatcher (delivered/failed/dead-lettered): %s",
                 totals["delivered"], totals["failed"], totals["dead_lettered"],
                 snapshot.spool.backlog, per or "none")

    def request_stop(self) -> None:
        self._stop.set()

    # -- HTTP ------------------------------------------------------------------------------------

    async def _start_http(self, tls: ssl.SSLContext | None) -> str:
        server = self.config.server
        assert self._sock is not None
        app = self.app = make_app(Context(self.core, self.metrics, self.budget, server))
        access: dict[str, Any] = {"access_log": None}
        if self.config.log.access:
            access = {"access_log": logging.getLogger(logs.ACCESS_LOGGER),
                      "access_log_class": logs.AccessLogger}
        # lingering_time: how long an unread request body is drained after an early answer.
        # read_bufsize: what aiohttp reads ahead of a body that waits for the in-flight budget,
        # per connection (0.6 MiB at its default, 0.24 MiB at this size; no slower, measured).
        self._runner = web.AppRunner(app, shutdown_timeout=5.0, keepalive_timeout=server.idle_timeout,
                                     lingering_time=1.0, read_bufsize=READ_BUFSIZE, **access)
        await self._runner.setup()
        _cap_connections(self._runner.server, server.max_connections)
        await web.SockSite(self._runner, self._sock, ssl_context=tls).start()
        return server.url(self.port)

    async def _stop_http(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()  # stops listening, then waits for requests in flight
            self._runner = None
        if self._sock is not None:
            self._sock.close()  # bound but never served: start-up failed after binding
            self._sock = None

    # -- signals -------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in HANDLED_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self.core.reloader.request, "SIGHUP")

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (*HANDLED_SIGNALS, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            log.warning("received %s again: forcing exit", sig.name)
            self.force_exit = True
            self.core.cancel_workers()
            return
        log.info("received %s: shutting down", sig.name)
        self.core.stopping = True
        self._stop.set()


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts so a taken port changes nothing."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise DispatchdError(f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise DispatchdError(f"cannot listen on {host}:{port}: {exc}") from None
    return sock


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
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise DispatchdError(f"cannot set up TLS with {cert} and {key}: {exc}") from None
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
