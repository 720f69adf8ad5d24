"""The replica scenario of docs/deployment.md, end to end: two dispatchd replicas behind HAProxy,
one SQL database and one RabbitMQ exchange; clients POST through the proxy while one replica is
killed with SIGKILL and started again on its spool. Run against local processes
(tests/test_replicas.py) and against containers of the image (tests/container_replicas.py)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from .amqp import BoundQueue
from .daemon import eventually
from .haproxy import HAProxy
from .records import record
from .sql import ServerDb

PAGE = 500  # GET /v1/events page size: several pages per replica


class Replica(Protocol):
    """One dispatchd replica, reached directly (not through the proxy)."""

    instance: str  # the server.instance it must report
    url: str

    async def start(self) -> None:
        """Start (again, on the same spool and port); return once ``/readyz`` answers 200."""

    async def kill(self) -> None:
        """SIGKILL: no drain, no goodbye."""

    def logs(self) -> str: ...


@dataclass
class Load:
    """Clients POSTing batches through the proxy; every id of a 2xx answer is ``accepted``."""

    url: str
    cluster: str  # every record's cluster, so that the query API can pick the test's rows
    size: int = 10
    accepted: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def batch(self) -> list[dict[str, Any]]:
        entity = {"type": "CLUSTER", "id": self.cluster, "name": "web", "status": "ACTIVE"}
        return [record(action={**record()["action"], "entity": entity}) for _ in range(self.size)]

    async def run(self, session: aiohttp.ClientSession) -> None:
        while not self.stop.is_set():
            try:
                async with session.post(self.url + "/v1/events", json=self.batch()) as resp:
                    if 200 <= resp.status < 300:
                        self.accepted += (await resp.json())["ids"]
                        continue
                    await resp.read()
                    self.failures[str(resp.status)] += 1
            except aiohttp.ClientError as exc:  # a connection the proxy or a replica dropped
                self.failures[type(exc).__name__] += 1
            await asyncio.sleep(0.05)  # as a client backs off before it tries again


@dataclass
class Report:
    """What the scenario saw; ``summary()`` is printed by the tests."""

    accepted: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    stored: int = 0  # rows, accepted or not (a request cut by the kill may have been stored)
    published: int = 0  # distinct message ids
    published_again: int = 0  # ids published more than once (the killed replica's batch in hand)
    listed: dict[str, int] = field(default_factory=dict)  # instance: rows GET /v1/events listed
    restarted_accepted: int = 0  # accepted by the killed replica after its restart
    down_seconds: float = 0.0  # SIGKILL to ready again
    drain_seconds: float = 0.0  # load stopped to every backlog 0
    seconds: float = 0.0

    def summary(self) -> str:
        failures = ", ".join(f"{k} x{v}" for k, v in sorted(self.failures.items())) or "none"
        listed = ", ".join(f"{k}: {v}" for k, v in self.listed.items())
        return (f"accepted {self.accepted} events; failed requests: {failures}; "
                f"killed replica down {self.down_seconds:.1f} s, accepted {self.restarted_accepted} "
                f"after its restart; backlogs 0 after {self.drain_seconds:.1f} s; "
                f"stored {self.stored} rows (each accepted id once); published {self.published} "
                f"ids ({self.published_again} more than once); listed by GET /v1/events: {listed}; "
                f"{self.seconds:.1f} s in all")


async def _json(session: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with session.get(url, params=params) as resp:
        assert resp.status == 200, f"GET {url}: {resp.status} {await resp.text()}"
        return await resp.json()


async def _backlogs(session: aiohttp.ClientSession, replica: Replica) -> dict[str, int]:
    body = await _json(session, replica.url + "/v1/dispatchers")
    return {d["name"]: d["backlog"] for d in body["dispatchers"]}


async def _listed(session: aiohttp.ClientSession, replica: Replica, cluster: str) -> list[str]:
    """Every id ``GET /v1/events?cluster_id=`` lists on ``replica``, page by page (marker)."""
    ids: list[str] = []
    while True:
        marker = {"marker": ids[-1]} if ids else {}
        page = (await _json(session, replica.url + "/v1/events", cluster_id=cluster,
                            limit=str(PAGE), **marker))["events"]
        ids += [event["id"] for event in page]
        if len(page) < PAGE:
            return ids


async def kill_and_restart_under_load(
    replicas: Sequence[Replica], proxy_url: str, db: ServerDb, queue: BoundQueue, cluster: str,
    token: str | None = None, writers: int = 4, before_kill: int = 1000,
) -> Report:
    """The scenario and its checks (assertions); returns what it saw. ``replicas[0]`` is killed."""
    report = Report()
    began = time.monotonic()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    victim = replicas[0]
    async with aiohttp.ClientSession(headers=headers) as session:
        load = Load(proxy_url, cluster)
        clients = [asyncio.create_task(load.run(session)) for _ in range(writers)]
        try:
            await eventually(lambda: len(load.accepted) >= before_kill, timeout=30)
            killed = time.monotonic()
            await victim.kill()
            await asyncio.sleep(1.0)  # the load goes on against the survivor meanwhile
            await victim.start()
            report.down_seconds = time.monotonic() - killed

            async def back_in_rotation() -> int:  # HAProxy sends it requests again
                accepted: int = (await _json(session, victim.url + "/v1/status"))["accepted"]
                return accepted if accepted >= 100 else 0

            report.restarted_accepted = await eventually(back_in_rotation, timeout=30)
        finally:
            load.stop.set()
            await asyncio.gather(*clients)
        report.accepted, report.failures = len(load.accepted), dict(load.failures)
        accepted = set(load.accepted)
        assert len(accepted) == len(load.accepted), "one id was accepted twice"

        stopped = time.monotonic()
        for replica in replicas:
            async def drained(replica: Replica = replica) -> bool:
                return not any((await _backlogs(session, replica)).values())

            await eventually(drained, timeout=60, interval=0.2)
        report.drain_seconds = time.monotonic() - stopped

        # Stored exactly once, by one replica or the other.
        rows = dict(await db.query("SELECT id, COUNT(*) FROM event GROUP BY id"))
        report.stored = len(rows)
        assert not accepted - rows.keys(), f"{len(accepted - rows.keys())} accepted ids not stored"
        assert all(count == 1 for count in rows.values()), "an id was stored twice"

        # Published at least once, its id as message_id.
        messages = await queue.drain(accepted, timeout=30)
        published = Counter(m.message_id for m in messages)
        report.published = len(published)
        report.published_again = sum(1 for n in published.values() if n > 1)
        assert not accepted - published.keys(), \
            f"{len(accepted - published.keys())} accepted ids not published"

        # Either replica's query API lists each row once.
        instances = []
        for replica in replicas:
            listed = await _listed(session, replica, cluster)
            report.listed[replica.instance] = len(listed)
            assert len(listed) == len(set(listed)), f"{replica.instance} listed a row twice"
            assert set(listed) == rows.keys(), f"{replica.instance} listed other rows than stored"
            status = await _json(session, replica.url + "/v1/status")
            instances.append(status["instance"])
        assert instances == [r.instance for r in replicas]
        assert len(set(instances)) == len(instances)
    report.seconds = time.monotonic() - began
    return report


async def run_behind_haproxy(
    replicas: Sequence[Replica], proxy: HAProxy, db: ServerDb, queue: BoundQueue, cluster: str,
    token: str | None = None,
) -> Report:
    """Start the replicas and HAProxy, then the scenario; on a failure print their logs' ends.
    HAProxy is stopped afterwards; the replicas are the caller's to remove."""
    try:
        for replica in replicas:
            await replica.start()
        await proxy.start()
        return await kill_and_restart_under_load(replicas, proxy.url, db, queue, cluster=cluster,
                                                 token=token)
    except BaseException:
        for replica in replicas:
            print(f"--- {replica.instance} ---\n{replica.logs()[-6000:]}")
        print(f"--- haproxy ---\n{proxy.logs()[-3000:]}")
        raise
    finally:
        proxy.stop()
