"""``GET /metrics``: Prometheus text, read from one core snapshot at scrape time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from . import __version__
from .budget import ByteBudget
from .core import Core
from .status import DISPATCHER_STATES, Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Counters:
    """What only the HTTP layer sees; everything else comes from the core's snapshot."""

    def __init__(self) -> None:
        self.rejected: Counter[str] = Counter()  # error answers, by error code


class SnapshotCollector(Collector):
    def __init__(self, counters: Counters, budget: ByteBudget) -> None:
        self.counters = counters
        self.budget = budget
        self.snapshot: Snapshot | None = None  # taken by ``Metrics.render`` before each collect

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        assert s is not None
        # Which replica this is, as an info metric rather than a label on every series: the
        # scrape's target labels already tell series apart, and queries join on this one.
        yield InfoMetricFamily("dispatchd", "This process: server.instance and the version.",
                               value={"dispatchd_instance": s.instance, "version": __version__})
        yield _counter("dispatchd_events_accepted", "Records committed to the spool.", s.accepted)
        rejected = CounterMetricFamily("dispatchd_requests_rejected",
                                       "Requests answered with an error, by code.", labels=["code"])
        for code, count in sorted(self.counters.rejected.items()):
            rejected.add_metric([code], count)
        yield rejected
        spool = s.spool
        yield _gauge("dispatchd_spool_backlog", "Records some cursor has not passed.", spool.backlog)
        yield _gauge("dispatchd_spool_capacity", "spool.max_events.", spool.capacity)
        yield _counter("dispatchd_spool_quarantined", "Unreadable spool files moved aside.",
                       spool.quarantined)
        yield _counter("dispatchd_spool_commits", "Group commits (each may hold many requests).",
                       spool.commits)
        yield _gauge("dispatchd_spool_free_bytes", "Free space for the spool (filesystem + "
                     "reusable pages).", spool.free_bytes if spool.free_bytes is not None else -1)
        yield _gauge("dispatchd_spool_reserve_bytes", "spool.reserve_bytes.", spool.reserve_bytes)
        yield _gauge("dispatchd_spool_low_space", "1 while ingest is stopped for lack of space.",
                     float(spool.low_space))
        yield _gauge("dispatchd_inflight_bytes", "Request body bytes held by ingest now.",
                     self.budget.held)
        yield _gauge("dispatchd_inflight_waiting", "Requests waiting for the in-flight budget.",
                     self.budget.waiting)
        yield _gauge("dispatchd_config_generation", "Successful config loads.", s.config.generation)
        yield from _dispatchers(s)


def _dispatchers(s: Snapshot) -> Iterator[Metric]:
    """Every dispatcher the daemon knows, each family present even at zero."""
    counters = {
        "delivered": ("dispatchd_dispatcher_delivered", "Records delivered."),
        "failed": ("dispatchd_dispatcher_failed_attempts", "Failed calls."),
        "dead_lettered": ("dispatchd_dispatcher_dead_lettered", "Records dead-lettered since start."),
    }
    gauges = {
        "backlog": ("dispatchd_dispatcher_backlog", "Records not yet passed."),
        "dead_letters": ("dispatchd_dispatcher_dead_letters", "Dead letters stored."),
        "lag_seconds": ("dispatchd_dispatcher_lag_seconds", "Age of the oldest record owed."),
    }
    families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
        key: CounterMetricFamily(name, doc, labels=["dispatcher"])
        for key, (name, doc) in counters.items()
    }
    families.update({key: GaugeMetricFamily(name, doc, labels=["dispatcher"])
                     for key, (name, doc) in gauges.items()})
    state = GaugeMetricFamily("dispatchd_dispatcher_state", "1 for the current state.",
                              labels=["dispatcher", "state"])
    reported = GaugeMetricFamily("dispatchd_dispatcher_reported",
                                 "Numbers a dispatcher reports of itself (its report()).",
                                 labels=["dispatcher", "key"])
    for d in s.dispatchers:
        for key, family in families.items():
            family.add_metric([d.name], getattr(d, key))
        for key, value in d.report.items():
            if isinstance(value, int | float):  # bool is an int: 1 or 0
                reported.add_metric([d.name, key], float(value))
        for candidate in DISPATCHER_STATES:
            state.add_metric([d.name, candidate], float(candidate == d.state))
    yield from (*families.values(), state, reported)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class Metrics:
    """One registry per daemon, so tests and embedders can run several in a process."""

    def __init__(self, core: Core, budget: ByteBudget) -> None:
        self.core = core
        self.counters = Counters()
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = SnapshotCollector(self.counters, budget)
        self.registry.register(self.collector)

    async def render(self) -> bytes:
        self.collector.snapshot = await self.core.snapshot()
        return generate_latest(self.registry)
