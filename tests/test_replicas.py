"""Two real dispatchd processes, each with its own spool, behind HAProxy (deploy/haproxy.cfg's
settings), writing into one PostgreSQL or MariaDB database and one RabbitMQ exchange: one is
killed with SIGKILL mid-load and restarted on its spool; every accepted event is stored once,
published at least once, and listed once by either replica's query API. The same scenario runs
against containers of the image in ``make container-test`` (tests/container_replicas.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from .support.amqp import bound_queue
from .support.daemon import Daemon
from .support.haproxy import HAProxy, require_haproxy
from .support.replicas import run_behind_haproxy
from .support.sql import DIALECTS, fresh_database


class ProcessReplica:
    """A ``Daemon`` with the ``database`` and ``message`` dispatchers and an instance name."""

    def __init__(self, tmp: Path, instance: str, database_url: str, exchange: str) -> None:
        (tmp / instance).mkdir()
        self.instance = instance
        self.daemon = Daemon(tmp / instance, ["database", "message"],
                             server={"instance": instance},
                             dispatchers={"database": {"url": database_url},
                                          "message": {"exchange": exchange}})
        self.url = self.daemon.url

    async def start(self) -> None:
        await self.daemon.start()

    async def kill(self) -> None:
        self.daemon.kill()  # SIGKILL

    def logs(self) -> str:
        return self.daemon.logs()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_replica_killed_under_load_loses_and_duplicates_nothing(tmp_path, dialect):
    require_haproxy()
    async with fresh_database(dialect) as db, bound_queue() as queue:
        replicas = [ProcessReplica(tmp_path, name, db.url(), queue.exchange)
                    for name in ("replica-a", "replica-b")]
        proxy = HAProxy(tmp_path, [(r.instance, r.daemon.port) for r in replicas])
        try:
            report = await run_behind_haproxy(replicas, proxy, db, queue,
                                              cluster=f"cluster-{uuid.uuid4().hex[:8]}")
        finally:
            for replica in replicas:
                replica.daemon.kill()
    print(f"{dialect}: {report.summary()}")
    assert report.restarted_accepted > 0
