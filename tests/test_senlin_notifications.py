"""The ``senlin`` format against Senlin's own code: a default oslo.messaging listener, and
Senlin's ``MessageEvent.dump`` compared key by key. Senlin runs in subprocesses (tests/senlin/),
each test on a RabbitMQ vhost of its own, as oslo's names (exchange ``senlin``, queues
``versioned_notifications.<priority>``) are fixed.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import aio_pika
import aiohttp

from dispatchd.dispatchers.message import MessageDispatcher, MessageOptions
from dispatchd.models import Record

from .support.daemon import Daemon, eventually, post
from .support.senlin import run_script, senlin_python
from .support.vhost import Vhost, fresh_vhost_async

CLUSTER_ID = "6a1f3c52-0c1e-4b8e-9d5e-2b7f3c1a9e10"
NODE_ID = "0b7d21e0-4c6a-4f1e-8a3b-5d9e7f2c1b40"
PROFILE_ID = "9c2e4f60-7d3b-4a1c-b5e8-3f6a9d0c2e71"
CONTEXT = {
    "user_id": "5d2c", "project_id": "8f1a", "domain_id": "default", "user_domain_id": "default",
    "project_domain_id": "default", "user_name": "alice", "project_name": "web-team",
    "request_id": "req-6c1e4b8e", "roles": ["member", "reader"], "is_admin": False,
    "auth_token": "secret-token", "password": "secret-password",  # never sent by either
}
# Not credentials; current oslo.messaging's redacted context drops them, dispatchd keeps them.
CONTEXT_EXTRA = {"region_name": "RegionOne", "auth_url": "http://keystone:5000/v3"}
CLUSTER = {
    "id": CLUSTER_ID, "name": "web", "profile_id": PROFILE_ID, "status": "ACTIVE",
    "status_reason": "Cluster scaling succeeded", "user": "5d2c", "project": "8f1a",
    "init_at": "2026-12-01T05:59:58.500000+00:00", "created_at": "2026-12-01T06:00:00+00:00",
    "updated_at": "2026-12-01T06:10:00.250000+00:00", "min_size": 1, "max_size": 5,
    "desired_capacity": 3, "metadata": {"tier": "café"}, "data": {"history": [1, None]},
}
NODE = {
    "id": NODE_ID, "name": "web-1", "profile_id": PROFILE_ID, "cluster_id": CLUSTER_ID,
    "physical_id": "4e1c8b2a-nova", "index": 1, "role": "master", "status": "ACTIVE",
    "user": "5d2c", "project": "8f1a", "init_at": "2026-12-01T06:00:01+00:00",
    "created_at": "2026-12-01T06:00:05+00:00",
}


def _action(number: int, name: str, **values: Any) -> dict[str, Any]:
    return {"id": f"3c0f9d2e-0000-4000-8000-{number:012d}", "action": name,
            "name": f"{name.lower()}_{number}", "start_time": 1764568800.25 + number,
            "created_at": "2026-12-01T06:00:02.750000+00:00", **values}


def events() -> list[dict[str, Any]]:
    """One event per oslo priority (cluster and node, with and without a phase,
    NODE_OPERATION, an orphan node), each with its own action id."""
    cluster = {"kind": "cluster", "entity": CLUSTER, "context": {**CONTEXT, **CONTEXT_EXTRA}}
    node = {"kind": "node", "entity": NODE, "context": CONTEXT}
    orphan = {"kind": "node", "entity": {**NODE, "cluster_id": "", "role": None}, "context": CONTEXT}
    return [
        {"level": 10, "phase": "start", "spec": {**cluster, "action": _action(1, "CLUSTER_SCALE_OUT",
                                                  inputs={"count": 2}, status="RUNNING")}},
        {"level": 20, "phase": "end", "spec": {**cluster, "action": _action(2, "CLUSTER_SCALE_OUT",
                                                inputs={"count": 2}, outputs={"added": [NODE_ID]},
                                                status="SUCCEEDED", end_time=1764568810.5)}},
        {"level": 30, "spec": {**cluster, "action": _action(3, "CLUSTER_CHECK", timeout=60)}},
        {"level": 40, "phase": "error", "reason": "reboot failed",
         "spec": {**node, "action": _action(4, "NODE_OPERATION", inputs={"operation": "reboot"},
                                            status="FAILED", status_reason="server error")}},
        {"level": 50, "spec": {**orphan, "action": _action(5, "NODE_DELETE")}},
    ]


PRIORITIES = ("debug", "info", "warn", "error", "critical")

# Every key in which dispatchd's notification may differ from Senlin's, with why. Any other
# difference fails the comparison.
ALLOWED = {
    "oslo.message/message_id":
        "oslo: a new uuid4 per send; dispatchd: the record id, the same on every retry",
    "oslo.message/_unique_id":
        "oslo: a new uuid4 per send; dispatchd: the record id's hex, so oslo's listener drops a"
        " republished copy it has just taken",
    "oslo.message/timestamp":
        "oslo: when it was sent; dispatchd: when the event happened (the record's timestamp)",
    "oslo.message/publisher_id":
        "senlin-engine:<the engine's host>; dispatchd: senlin-engine:<its own host> unless"
        " publisher_id is set",
    "oslo.message/_context_region_name":
        "oslo.messaging >= 14.x sends a redacted copy of the context with oslo.context's fields"
        " only (this one null); dispatchd sends the record's value (not a credential)",
    "oslo.message/_context_auth_url": "as _context_region_name",
    "amqp/message_id": "kombu sets none; dispatchd: the record id",
    "amqp/timestamp": "kombu sets none; dispatchd: the record's timestamp",
    "amqp/type": "kombu sets none; dispatchd: the event type",
    "amqp/app_id": "kombu sets none; dispatchd: dispatchd",
    "amqp/headers": "kombu sends none; dispatchd: level and priority",
}
PROPERTIES = ("exchange", "routing_key", "content_type", "content_encoding", "delivery_mode",
              "priority", "message_id", "timestamp", "type", "app_id", "headers", "expiration",
              "correlation_id", "reply_to", "user_id")


async def test_a_default_oslo_listener_receives_every_level_from_the_daemon(tmp_path):
    senlin_python()  # skip (or fail in CI) before starting anything without a Senlin venv
    chosen = [e for e in events() if e["level"] >= 20]  # INFO, WARN, ERROR, CRITICAL
    async with fresh_vhost_async() as vhost:
        ready = tmp_path / "listener.ready"
        listening = asyncio.create_task(asyncio.to_thread(
            run_script, "listener", stdin={"url": vhost.oslo_url, "count": len(chosen),
                                           "ready": str(ready), "timeout": 60}, timeout=90))
        built = await asyncio.to_thread(run_script, "notify_reference",
                                        stdin={"url": None, "events": chosen})
        await eventually(lambda: ready.exists() or listening.done(), timeout=60)
        daemon = Daemon(tmp_path, ["message"],
                        dispatchers={"message": {"url": vhost.amqp_url, "format": "senlin"}})
        try:
            await daemon.start()
            async with aiohttp.ClientSession() as session:
                status, body = await post(session, daemon.url + "/v1/events", built["records"])
                assert status == 202, body
                received = (await listening)["received"]
                report = (await daemon.dispatchers(session))["message"]["report"]
        finally:
            daemon.kill()
    assert sorted(r["priority"] for r in received) == ["critical", "error", "info", "warn"]
    by_id = {r["metadata"]["message_id"]: r for r in received}
    for record in built["records"]:
        got = by_id[record["id"]]
        assert got["errors"] == [] and got["context_error"] is None  # every field reads
        kind = "cluster" if record["action"]["entity"]["type"] == "CLUSTER" else "node"
        assert set(got["fields"]) == {kind, "action", "exception"}
        assert got["fields"][kind]["id"] == record["action"]["entity"]["id"]
        assert got["fields"]["action"]["id"] == record["action"]["id"]
        assert got["publisher_id"] == f"senlin-engine:{socket.gethostname()}"
        assert got["ctxt"]["user_id"] == "5d2c" and got["ctxt"]["roles"] == ["member", "reader"]
    assert {r["event_type"] for r in received} == {
        "cluster.scale_out.end", "cluster.check.None", "node.reboot.error", "node.delete.None"}
    assert report["unroutable"] == 0 and report["durable"] is False
    # Next to the oslo consumer that declared exchange "senlin" first, nothing was refused.
    assert "PRECONDITION" not in daemon.logs() and "other arguments" not in daemon.logs()


async def test_dispatchd_sends_what_senlins_message_event_sends():
    senlin_python()
    between = {"level": 25, "phase": "end", "spec": events()[1]["spec"]}
    async with fresh_vhost_async() as vhost:
        # Senlin's own dump, through oslo.messaging, into the default queues its notifier declares.
        senlin = await asyncio.to_thread(run_script, "notify_reference", stdin={
            "url": vhost.oslo_url, "host": "engine-1", "events": [*events(), between]})
        theirs = await _take(vhost, len(events()))
        records = [Record.model_validate(r) for r in senlin["records"]]
        dispatcher = MessageDispatcher("message", MessageOptions(url=vhost.amqp_url,
                                                                 format="senlin"))
        try:
            await dispatcher.dump_batch(records)
        finally:
            await dispatcher.close()
        ours = await _take(vhost, len(records))
    # Senlin cannot send a level between its names; dispatchd sends the lower one.
    assert senlin["errors"] == [None] * len(events()) + [
        "AttributeError: 'NoneType' object has no attribute 'lower'"]
    assert ours[records[-1].id]["oslo.message/priority"] == "INFO"
    assert len(theirs) == len(events())
    differences: dict[str, set[str]] = {}
    for record in records[:-1]:
        mine = ours[record.id]
        senlins = theirs[mine["oslo.message/payload/senlin_object.data/action/senlin_object.data/id"]]
        for key in sorted(set(mine) | set(senlins)):
            if mine.get(key, "<absent>") != senlins.get(key, "<absent>"):
                differences.setdefault(key, set()).add(record.id)
    unexplained = sorted(set(differences) - set(ALLOWED))
    assert not unexplained, {key: (ours[next(iter(differences[key]))].get(key, "<absent>"),
                                   "Senlin:", _senlins(theirs, key)) for key in unexplained}
    # Credentials: Senlin's are redacted by oslo.messaging, dispatchd never has them.
    for key in ("auth_token", "auth_token_info", "password"):
        assert {m[f"oslo.message/_context_{key}"] for m in [*theirs.values(), *ours.values()]} \
            == {None}


async def _take(vhost: Vhost, count: int) -> dict[str, dict[str, Any]]:
    """Notifications from the default queues, flattened, by message id (Senlin's: action id)."""
    got: dict[str, dict[str, Any]] = {}
    connection = await aio_pika.connect(vhost.amqp_url)
    try:
        channel = await connection.channel()
        queues = [await channel.declare_queue(f"versioned_notifications.{p}", passive=True)
                  for p in PRIORITIES]

        async def drained() -> bool:
            for queue in queues:
                while (message := await queue.get(no_ack=True, fail=False)) is not None:
                    flat = _flatten(message)
                    key = flat["amqp/message_id"] or flat[
                        "oslo.message/payload/senlin_object.data/action/senlin_object.data/id"]
                    got[key] = flat
            return len(got) >= count

        await eventually(drained, timeout=30)
    finally:
        await connection.close()
    return got


def _flatten(message: aio_pika.abc.AbstractIncomingMessage) -> dict[str, Any]:
    info = message.info()
    flat = {f"amqp/{name}": info.get(name) for name in PROPERTIES}
    flat["amqp/type"] = message.type  # info() renders an absent type as the text "None"
    envelope = json.loads(message.body)
    envelope["oslo.message"] = json.loads(envelope["oslo.message"])
    flat.update(_paths(envelope, ""))
    return flat


def _paths(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_paths(item, f"{prefix}/{key}" if prefix else key))
        return out
    return {prefix: json.dumps(value) if isinstance(value, list | dict) else value}


def _senlins(theirs: dict[str, dict[str, Any]], key: str) -> list[Any]:
    return [m.get(key, "<absent>") for m in theirs.values()]
