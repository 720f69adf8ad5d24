"""``make container-test``: the replica scenario of tests/test_replicas.py against two containers of
the image (deploy/config/dispatchd.toml, credentials from the environment as in deploy/), with
host networking, behind HAProxy, into a fresh PostgreSQL database and a fresh RabbitMQ exchange.

Not collected by ``make test`` (the file name does not start with ``test_``): it needs the image
built first, and takes a minute. Run it as ``pytest tests/container_replicas.py``, with
DISPATCHD_CONTAINER and DISPATCHD_IMAGE as the Makefile sets them."""

from __future__ import annotations

import secrets
import uuid

from .support.amqp import RABBIT_HOST, RABBIT_PORT, bound_queue
from .support.containers import IMAGE, ContainerReplica
from .support.daemon import free_port
from .support.haproxy import HAProxy, require_haproxy
from .support.replicas import run_behind_haproxy
from .support.sql import HOST, PORTS, fresh_database


async def test_a_container_killed_under_load_loses_and_duplicates_nothing(tmp_path):
    require_haproxy()
    token = secrets.token_hex(16)
    async with fresh_database("postgresql") as db, bound_queue() as queue:
        env = {  # what deploy/compose.yaml hands its replicas; trust auth ignores the password
            "POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": "unused", "POSTGRES_HOST": HOST,
            "POSTGRES_PORT": str(PORTS["postgresql"]), "POSTGRES_DB": db.name,
            "RABBITMQ_USER": "guest", "RABBITMQ_PASSWORD": "guest", "RABBITMQ_HOST": RABBIT_HOST,
            "RABBITMQ_PORT": str(RABBIT_PORT), "DISPATCHD_TOKEN": token,
        }
        run = uuid.uuid4().hex[:6]
        replicas = [ContainerReplica(tmp_path, f"dispatchd-ct-{run}-{i}", free_port(), env,
                                     {"dispatchers": {"message": {"exchange": queue.exchange}}})
                    for i in (1, 2)]
        proxy = HAProxy(tmp_path, [(r.instance, r.port) for r in replicas])
        try:
            report = await run_behind_haproxy(replicas, proxy, db, queue, cluster=f"cluster-{run}",
                                              token=token)
        finally:
            for replica in replicas:
                await replica.remove()
    print(f"\n{IMAGE}, PostgreSQL: {report.summary()}")
