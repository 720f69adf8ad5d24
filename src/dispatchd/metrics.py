"""``GET /metrics``: Prometheus text, read from the service's state at scrape time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .service import Service

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

STATES = ("starting", "running", "retrying", "failed", "draining", "stopped")


class Counters:
    """What ingest counts; everything else is read from the workers and the spool."""

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected: Counter[str] = Counter()  # by error code


class ServiceCollector(Collector):
    def __init__(self, service: Service) -> None:
        self.service = service
        self.dead_letters: dict[str, int] = {}  # refreshed by ``render`` before each collect

    def collect(self) -> Iterator[Metric]:
        s = self.service
        yield _counter("dispatchd_events_accepted", "Records committed to the spool.",
                       s.counters.accepted)
        rejected = CounterMetricFamily("dispatchd_requests_rejected",
                                       "Ingest requests answered with an error.", labels=["code"])
        for code, count in sorted(s.counters.rejected.items()):
            rejected.add_metric([code], count)
        yield rejected
        yield _gauge("dispatchd_spool_backlog", "Records some cursor has not passed.",
                     s.spool.backlog)
        yield _gauge("dispatchd_spool_capacity", "spool.max_events.", s.spool.max_events)
        yield _counter("dispatchd_spool_quarantined", "Unreadable spool files moved aside.",
                       len(s.spool.quarantined))
        yield _counter("dispatchd_spool_commits", "Group commits (each may hold many requests).",
                       s.spool.commits)
        yield _gauge("dispatchd_config_generation", "Successful config loads.", s.generation)
        yield from self._dispatchers()

    def _dispatchers(self) -> Iterator[Metric]:
        s = self.service
        families = {
            "delivered": CounterMetricFamily(
                "dispatchd_dispatcher_delivered", "Records delivered.", labels=["dispatcher"]),
            "failed": CounterMetricFamily(
                "dispatchd_dispatcher_failed_attempts", "Failed calls.", labels=["dispatcher"]),
            "dead_lettered": CounterMetricFamily(
                "dispatchd_dispatcher_dead_lettered", "Records dead-lettered since start.",
                labels=["dispatcher"]),
        }
        backlog = GaugeMetricFamily("dispatchd_dispatcher_backlog", "Records not yet passed.",
                                    labels=["dispatcher"])
        stored = GaugeMetricFamily("dispatchd_dispatcher_dead_letters",
                                   "Dead letters stored.", labels=["dispatcher"])
        state = GaugeMetricFamily("dispatchd_dispatcher_state", "1 for the current state.",
                                  labels=["dispatcher", "state"])
        for name in s.config.dispatch.enabled:
            worker = s.workers.get(name)
            current = worker.state if worker is not None else "failed"
            for key, family in families.items():
                family.add_metric([name], getattr(worker.stats, key) if worker else 0)
            backlog.add_metric([name], s.spool.head - s.spool.cursors.get(name, s.spool.head))
            for candidate in STATES:
                state.add_metric([name, candidate], float(candidate == current))
        for name, count in sorted(self.dead_letters.items()):
            stored.add_metric([name], count)
        yield from (*families.values(), backlog, stored, state)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class Metrics:
    """One registry per service, so tests and embedders can run several in a process."""

    def __init__(self, service: Service) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = ServiceCollector(service)
        self.registry.register(self.collector)
        self.service = service

    async def render(self) -> bytes:
        self.collector.dead_letters = await self.service.spool.dead_letter_counts()
        return generate_latest(self.registry)
