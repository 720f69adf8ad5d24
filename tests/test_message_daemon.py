"""The message dispatcher in the real daemon, through a proxy the test cuts and restores."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import aio_pika
import aiohttp

from .support.amqp import RABBIT_URL, TcpProxy, bound_queue
from .support.daemon import DISPATCHD, Daemon, eventually, post
from .support.records import record
from .support.stream import streaming

MAX_ATTEMPTS = 3  # the test config's dispatch.max_attempts


async def test_a_broker_outage_loses_nothing_and_never_pauses_the_database(tmp_path):
    async with bound_queue() as bound:
        proxy = TcpProxy()
        await proxy.start()
        message = {"url": proxy.url, "exchange": bound.exchange, "connect_timeout": 1.0,
                   "confirm_timeout": 2.0}
        daemon = Daemon(tmp_path, ["database", "message"], dispatchers={"message": message})
        try:
            await daemon.start()
            async with aiohttp.ClientSession() as session:
                # A steady trickle, one writer: published in the order accepted.
                async with streaming(session, daemon.url + "/v1/events", pause=0.01) as stream:
                    await stream.advance(batches=20)
                    await proxy.cut()
                    cut_count = len(stream.accepted)

                    async def outage_outlasted_the_attempts() -> bool:
                        message = (await daemon.dispatchers(session))["message"]
                        return message["state"] == "retrying" and message["failed"] > MAX_ATTEMPTS

                    await eventually(outage_outlasted_the_attempts, timeout=30)
                    await stream.advance(batches=5)
                    # During the outage: ingest went on, and the database has what was accepted.
                    during = stream.accepted
                    assert not stream.errors and len(during) > cut_count + 20
                    settled = set(during[:-10])  # allow the newest few to be in flight
                    await eventually(lambda: settled <= {r["id"] for r in daemon.db_rows()},
                                     timeout=5)
                    states = await daemon.dispatchers(session)
                    assert states["message"]["state"] == "retrying"
                    assert states["message"]["last_error"].startswith("unavailable:")
                    assert "guest:guest" not in json.dumps(states)  # no password in status
                    assert states["message"]["backlog"] > 0
                    delivered = states["message"]["delivered"]
                    await proxy.restore()

                    async def publishing_again() -> bool:
                        return (await daemon.dispatchers(session))["message"]["delivered"] > delivered

                    await eventually(publishing_again, timeout=30)
                    await stream.advance(batches=5)
            accepted = stream.accepted
            assert not stream.errors
            got = await bound.drain(set(accepted), timeout=60)
        finally:
            daemon.kill()
            await proxy.close()
    ids = [m.message_id for m in got]
    assert set(accepted) <= set(ids), f"{len(set(accepted) - set(ids))} accepted ids never published"
    first_seen = list(dict.fromkeys(ids))
    assert first_seen == accepted  # one writer, one cursor: published in the order accepted
    assert len({r["id"] for r in daemon.db_rows()}) == len(accepted)
    assert "dead-lettered seq" not in daemon.logs()
    assert "guest:guest" not in daemon.logs()  # the AMQP password never reaches the log


async def test_the_daemon_publishes_worker_batches_in_the_batch_format(tmp_path):
    async with bound_queue() as bound:
        message = {"exchange": bound.exchange, "format": "batch", "batch_max": 40}
        daemon = Daemon(tmp_path, ["message"], dispatchers={"message": message})
        try:
            await daemon.start()
            accepted: list[str] = []
            async with aiohttp.ClientSession() as session:
                for _ in range(3):
                    status, body = await post(session, daemon.url + "/v1/events",
                                              [record() for _ in range(100)])
                    assert status == 202, body
                    accepted.extend(body["ids"])
            got = await _drain_events(bound, len(accepted))
        finally:
            daemon.kill()
    assert [event["id"] for _, events in got for event in events] == accepted
    assert all(m.headers["count"] == len(events) <= 40 for m, events in got)
    assert {m.routing_key for m, _ in got} == {"batch"}


async def _drain_events(bound, n: int) -> list[tuple]:
    """Batch messages with their decoded events, until ``n`` events have arrived."""
    got: list[tuple] = []
    deadline = time.monotonic() + 30
    while sum(len(events) for _, events in got) < n and time.monotonic() < deadline:
        for message in await bound.drain(1, timeout=1):
            got.append((message, json.loads(message.body)))
    return got


async def test_unroutable_events_are_passed_on_counted_in_status_and_metrics_and_logged_once(
    tmp_path,
):
    exchange = f"dispatchd-test-{uuid.uuid4().hex[:8]}"  # the daemon declares it; no queue bound
    daemon = Daemon(tmp_path, ["message"], dispatchers={"message": {"exchange": exchange}})
    try:
        await daemon.start()
        async with aiohttp.ClientSession() as session:
            node = record(action={**record()["action"], "action": "NODE_CREATE",
                                  "entity": {"type": "NODE", "id": "n-1"}})
            for batch in ([record(), record(), node], [record()]):
                status, body = await post(session, daemon.url + "/v1/events", batch)
                assert status == 202, body

            async def all_four() -> dict:
                async with session.get(daemon.url + "/v1/status") as resp:
                    entry = {d["name"]: d for d in (await resp.json())["dispatchers"]}["message"]
                return entry if entry["delivered"] == 4 else {}

            entry = await eventually(all_four, timeout=30)
            async with session.get(daemon.url + "/metrics") as resp:
                metrics = await resp.text()
        shown = subprocess.run([str(DISPATCHD), "status", "-c", str(daemon.config)],
                               capture_output=True, text=True, timeout=60)
    finally:
        daemon.kill()
        await _delete_exchange(exchange)
    # Passed on, not retried: nothing failed or was dead-lettered, and nothing waits.
    assert (entry["failed"], entry["dead_letters"], entry["backlog"]) == (0, 0, 0)
    report = entry["report"]
    assert (report["unroutable"], report["unroutable_messages"], report["unroutable_keys"]) == (
        4, 4, 2)
    assert report["last_unroutable_key"] == "cluster.scale_out.end"
    line = 'dispatchd_dispatcher_reported{dispatcher="message",key="unroutable"} 4.0'
    assert line in metrics.splitlines()
    assert "unroutable=4" in shown.stdout, shown.stdout + shown.stderr
    logged = [line for line in daemon.logs().splitlines() if "route to no queue" in line]
    assert len(logged) == 2  # once per routing key, not once per message
    assert any("'node.create.end'" in line for line in logged)


async def _delete_exchange(name: str) -> None:
    connection = await aio_pika.connect(RABBIT_URL)
    try:
        await (await connection.channel()).exchange_delete(name)
    finally:
        await connection.close()
