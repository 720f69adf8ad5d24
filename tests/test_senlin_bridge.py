"""The bridge (plugins/senlin): Senlin's own ``senlin.engine.event`` with ``event_dispatchers =
dispatchd``, in Senlin's environment (tests/senlin/engine.py), against the real daemon."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from dispatchd.dispatchers.message import MessageOptions
from dispatchd.models import RECORD, Context

from .support.amqp import BoundQueue, bound_queue
from .support.daemon import Daemon, eventually
from .support.senlin import ROOT, run_script

CLUSTER_ID, NODE_ID = str(uuid.uuid4()), str(uuid.uuid4())
CONTEXT = {"user_id": "u1", "project_id": "p1", "request_id": "req-1", "roles": ["member"]}
CLUSTER = {
    "kind": "cluster",
    "entity": {"id": CLUSTER_ID, "name": "web", "status": "ACTIVE", "desired_capacity": 2},
    "action": {"id": str(uuid.uuid4()), "action": "CLUSTER_SCALE_OUT", "cause": "RPC Request",
               "status": "SUCCEEDED", "inputs": {"count": 1}},
    "context": CONTEXT,
}
NODE = {
    "kind": "node",
    "entity": {"id": NODE_ID, "name": "web-1", "cluster_id": CLUSTER_ID, "status": "ACTIVE",
               "index": 1},
    "action": {"id": str(uuid.uuid4()), "action": "NODE_CREATE", "cause": "RPC Request"},
    "context": CONTEXT,
}
# A node index dispatchd's record refuses (not an integer): a record it answers 422 for.
BAD_NODE = {**NODE, "entity": {**NODE["entity"], "index": "not-a-number"}}
FAST = {"backoff_initial": 0.05, "backoff_max": 0.2}
NOTHING_DROPPED = {"dropped_queue_full": 0, "dropped_rejected": 0, "dropped_error": 0}


def engine(plan: dict[str, Any]) -> Any:
    """Run tests/senlin/engine.py in a thread, so the test's loop serves meanwhile."""
    return asyncio.to_thread(run_script, "engine", stdin=plan)


def counters(stats: dict[str, int], *names: str) -> dict[str, int]:
    return {name: stats[name] for name in names}


def lines(out: dict[str, Any], level: str, text: str) -> list[str]:
    return [message for lvl, message in out["log"] if lvl == level and text in message]


@contextlib.asynccontextmanager
async def dispatchd(tmp: Path, **server: Any) -> AsyncIterator[tuple[Daemon, BoundQueue]]:
    """The daemon with ``database`` (SQLite) and ``message`` (senlin format) on a fresh exchange."""
    async with bound_queue(durable=True) as bound:
        # Exchange and durability explicit: the senlin format's defaults are not what we test here.
        message: dict[str, Any] = {"exchange": bound.exchange, "format": "senlin", "durable": True}
        if "default_queue" in MessageOptions.model_fields:
            # oslo.messaging's queue per routing key would outlive the test on the shared vhost.
            message["default_queue"] = False
        daemon = Daemon(tmp, ["database", "message"], dispatchers={"message": message},
                        server=server)
        try:
            await daemon.start()
            yield daemon, bound
        finally:
            daemon.kill()


async def arrived(daemon: Daemon, bound: BoundQueue, ids: list[str]) -> tuple[Counter, Counter]:
    """How often each id is in the database and on the exchange, once all of ``ids`` are."""
    await eventually(lambda: set(ids) <= {r["id"] for r in daemon.db_rows()}, timeout=30)
    messages = await bound.drain(set(ids), timeout=30)
    missing = set(ids) - {m.message_id for m in messages}
    assert not missing, f"{len(missing)} never published; dispatchd logged:\n{daemon.logs()[-4000:]}"
    return Counter(r["id"] for r in daemon.db_rows()), Counter(m.message_id for m in messages)


@pytest.mark.parametrize("green", [True, False], ids=["eventlet", "threads"])
async def test_events_the_engine_emits_arrive_once_with_the_ids_the_bridge_gave(tmp_path, green):
    async with dispatchd(tmp_path) as (daemon, bound):
        plan = {"green": green, "dispatchd": {"url": daemon.url, "batch_size": 5},
                "steps": [{"emit": 8, "spec": CLUSTER}, {"emit": 4, "spec": NODE},
                          {"emit": 1, "spec": CLUSTER, "reason_size": 70000}]}
        out = await engine(plan)
        ids = out["ids"]
        in_db, on_exchange = await arrived(daemon, bound, ids)
        rows = {r["id"]: r for r in daemon.db_rows()}
    assert out["green"] is green
    assert len(set(ids)) == 13
    assert out["final"] == {"queued": 13, "sent": 13, **NOTHING_DROPPED, "retries": 0,
                            "pending": 0, "in_flight": 0}
    assert in_db == on_exchange == Counter(ids)  # each once, in both
    assert [rows[i]["otype"] for i in ids] == ["CLUSTER"] * 8 + ["NODE"] * 4 + ["CLUSTER"]
    assert {rows[i]["cluster_id"] for i in ids} == {CLUSTER_ID}
    long_reason = rows[ids[-1]]["status_reason"]
    assert len(long_reason) == 65536 and long_reason.endswith("\u2026")  # cut, not rejected
    assert lines(out, "INFO", "every queued event sent at exit")


async def test_a_dispatchd_outage_while_the_engine_emits_loses_nothing(tmp_path):
    flags = {name: tmp_path / name for name in ("first-sent", "stopped", "emitted", "restarted")}
    async with dispatchd(tmp_path) as (daemon, bound):
        plan = {"dispatchd": {"url": daemon.url, "backoff_initial": 0.1, "backoff_max": 0.5,
                              "flush_timeout": 30},
                "steps": [
                    {"emit": 4, "spec": CLUSTER}, {"until": {"sent": 4}},
                    {"touch": str(flags["first-sent"])}, {"await": str(flags["stopped"])},
                    # dispatchd is down: the engine goes on emitting while the bridge retries
                    {"emit": 3, "spec": NODE}, {"until": {"retries": 2}},
                    {"emit": 3, "spec": CLUSTER}, {"until": {"retries": 4}},
                    {"snapshot": "down"}, {"touch": str(flags["emitted"])},
                    {"await": str(flags["restarted"])},
                    {"emit": 4, "spec": NODE}, {"until": {"sent": 14}},
                ]}
        task = asyncio.ensure_future(engine(plan))
        await until_file(flags["first-sent"], task)
        daemon.signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait) == 0
        flags["stopped"].touch()
        await until_file(flags["emitted"], task)
        await daemon.start()  # the same port and spool
        flags["restarted"].touch()
        out = await task
        ids = out["ids"]
        in_db, on_exchange = await arrived(daemon, bound, ids)
    down = out["snapshots"]["down"]  # the 6 events emitted during the outage wait in the bridge
    assert down["sent"] == 4 and down["pending"] + down["in_flight"] == 6 and down["retries"] >= 4
    assert len(set(ids)) == 14
    assert out["final"] == {"queued": 14, "sent": 14, **NOTHING_DROPPED,
                            "retries": out["final"]["retries"], "pending": 0, "in_flight": 0}
    assert in_db == on_exchange == Counter(ids)  # nothing lost, nothing twice
    assert len(lines(out, "WARNING", "unavailable")) == 1  # once per outage, not per retry
    assert len(lines(out, "INFO", "answers again")) == 1


@pytest.mark.parametrize("green", [True, False], ids=["eventlet", "threads"])
async def test_a_full_queue_drops_and_counts_and_never_holds_the_engine(tmp_path, green):
    received = tmp_path / "received"
    async with http_server([None], received) as hole:
        plan = {"green": green,
                "dispatchd": {"url": hole.url, "timeout": 600, "max_queue": 5, "batch_size": 1,
                              "flush_timeout": 0.2},
                "steps": [{"emit": 1, "spec": CLUSTER}, {"await": str(received)},
                          {"snapshot": "stuck"}, {"emit": 50, "spec": NODE},
                          {"snapshot": "after"}]}
        out = await engine(plan)
        requests, answered = len(hole.requests), hole.answered
    stuck, after = out["snapshots"]["stuck"], out["snapshots"]["after"]
    assert (requests, answered) == (1, 0)  # the first POST arrived and was never answered
    assert counters(stuck, "sent", "in_flight", "pending") == {"sent": 0, "in_flight": 1,
                                                                "pending": 0}
    # All 50 dumps returned while that POST was still waiting for its answer: none waited on it.
    assert after == {"queued": 6, "sent": 0, "dropped_queue_full": 45, "dropped_rejected": 0,
                     "dropped_error": 0, "retries": 0, "pending": 5, "in_flight": 1}
    assert 1 <= len(lines(out, "WARNING", "queue full")) < 45  # rate-limited
    assert out["final"] == after
    assert lines(out, "WARNING", "6 event(s) not sent at exit (5 queued, 1 in flight")


async def test_busy_answers_are_retried_with_the_same_batch_honouring_retry_after(tmp_path):
    answers = [(503, {"Retry-After": "1"}), (429, {}), (408, {}), (500, {}), (202, {})]
    async with http_server(answers) as server:
        out = await engine({
            "dispatchd": {"url": server.url, "backoff_initial": 0.01, "backoff_max": 0.01},
            "steps": [{"emit": 1, "spec": CLUSTER}, {"until": {"sent": 1}}]})
        requests = server.requests
    assert counters(out["final"], "sent", "retries", "dropped_rejected") == {
        "sent": 1, "retries": 4, "dropped_rejected": 0}
    assert len(requests) == 5 and len({r.body for r in requests}) == 1  # the same batch again
    assert [record["id"] for record in json.loads(requests[0].body)] == out["ids"]
    # backoff_max is 0.01 s: only the Retry-After of the 503 can have made the bridge wait 1 s.
    assert requests[1].at - requests[0].at >= 1.0
    assert len(lines(out, "WARNING", "unavailable")) == 1
    assert len(lines(out, "INFO", "answers again")) == 1


async def test_the_token_is_sent_and_refused_events_are_dropped_not_retried(tmp_path):
    token = "s3cret-" + uuid.uuid4().hex
    # max_batch 2 under batch_size 10: batches dispatchd finds too large are split, not dropped.
    async with dispatchd(tmp_path, auth_tokens=[token], max_batch=2) as (daemon, bound):
        right = await engine({
            "dispatchd": {"url": daemon.url, "token": token, "batch_size": 10, **FAST},
            "steps": [{"emit": 3, "spec": CLUSTER}, {"emit": 1, "spec": BAD_NODE},
                      {"emit": 2, "spec": NODE}]})
        good = [i for n, i in enumerate(right["ids"]) if n != 3]
        in_db, on_exchange = await arrived(daemon, bound, good)
        wrong = await engine({
            "dispatchd": {"url": daemon.url, "token": "not-" + token, "batch_size": 1, **FAST},
            "steps": [{"emit": 3, "spec": CLUSTER}]})
        rows = daemon.db_rows()
    # With the token: every event but the one dispatchd refuses, which is dropped and counted.
    assert right["final"] == {"queued": 6, "sent": 5, "dropped_queue_full": 0,
                              "dropped_rejected": 1, "dropped_error": 0, "retries": 0,
                              "pending": 0, "in_flight": 0}
    assert in_db == on_exchange == Counter(good)
    refused = lines(right, "ERROR", "rejected")
    assert len(refused) == 1 and "422" in refused[0] and "index" in refused[0]
    # A wrong token: each batch refused with 401, dropped at once, logged once for all three.
    assert counters(wrong["final"], "sent", "dropped_rejected", "retries", "pending") == {
        "sent": 0, "dropped_rejected": 3, "retries": 0, "pending": 0}
    unauthorized = lines(wrong, "ERROR", "rejected")
    assert len(unauthorized) == 1 and "401" in unauthorized[0]
    assert not set(wrong["ids"]) & {r["id"] for r in rows}
    assert token not in json.dumps(right) + json.dumps(wrong)  # the secret is never logged


# -- the record builder against dispatchd's model (records.py is standard library only) ------------

def plugin_records() -> Any:
    path = ROOT / "plugins" / "senlin" / "dispatchd_senlin" / "records.py"
    spec = importlib.util.spec_from_file_location("dispatchd_senlin_records", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bridge_sends_exactly_the_context_keys_dispatchd_accepts():
    assert list(plugin_records().CONTEXT_KEYS) == list(Context.model_fields)


class Cluster(SimpleNamespace):
    """Named as Senlin's class: the bridge takes the entity type from the class name."""


def test_reasons_over_the_limit_are_cut_to_it_and_the_record_is_accepted():
    records = plugin_records()
    context = SimpleNamespace(to_dict=lambda: {"user_id": "u1", "project_id": "p1",
                                               "auth_token": "secret", "password": "secret",
                                               "request_id": "q" * 300, "roles": ["r" * 300],
                                               "is_admin": False, "api_version": 1.12})
    entity = Cluster(id=CLUSTER_ID, name="web", status="ACTIVE", status_reason="e" * 70000)
    action = SimpleNamespace(id="a1", action="CLUSTER_CREATE", status_reason="s" * 70000,
                             entity=entity, context=context)
    record = records.record_of(20, action, phase="end", reason="r" * 70000)
    parsed = RECORD.validate_python(record)
    assert len(parsed.reason) == len(parsed.action.status_reason) == records.LONG
    assert len(parsed.action.entity.status_reason) == records.LONG
    assert parsed.reason.endswith("\u2026") and parsed.action.entity.type == "CLUSTER"
    assert parsed.context is not None and parsed.context.user_id == "u1"
    # long context values are cut too, not refused; objects become their text
    assert len(parsed.context.request_id) == len(parsed.context.roles[0]) == records.SHORT
    assert parsed.context.is_admin is False and parsed.context.api_version == "1.12"
    assert "secret" not in json.dumps(record)
    # records.LONG is dispatchd's own limit: one character more is refused.
    with pytest.raises(ValidationError):
        RECORD.validate_python({**record, "reason": "r" * (records.LONG + 1)})


# -- helpers ------------------------------------------------------------------------------------------

async def until_file(path: Path, task: asyncio.Future[Any]) -> None:
    """Wait for the script to create ``path``; if it exits first, its error is the failure."""
    def ready() -> bool:
        return path.exists() or task.done()

    await eventually(ready, timeout=60)
    if task.done():
        task.result()
        raise AssertionError(f"the engine script ended before creating {path.name}")


@dataclass
class Request:
    at: float  # time.monotonic() when it had arrived whole
    head: bytes
    body: bytes


@contextlib.asynccontextmanager
async def http_server(answers: list[tuple[int, dict[str, str]] | None], received: Path | None = None
                      ) -> AsyncIterator[SimpleNamespace]:
    """An HTTP server answering each request with the next of ``answers`` (the last one again
    once they run out); None never answers. Touches ``received`` at each request."""
    server_state = SimpleNamespace(url="", requests=[], answered=0)
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        body = await reader.readexactly(length)
        server_state.requests.append(Request(time.monotonic(), head, body))
        if received is not None:
            received.touch()
        answer = answers[min(len(server_state.requests), len(answers)) - 1]
        if answer is None:
            await done.wait()  # never answer
        else:
            status, headers = answer
            data = json.dumps({"accepted": 1} if status < 300 else {"error": {"code": "x"}})
            lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(data)}", "Connection: close",
                     *(f"{k}: {v}" for k, v in headers.items())]
            writer.write(("\r\n".join(lines) + "\r\n\r\n" + data).encode())
            await writer.drain()
            server_state.answered += 1
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    server_state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield server_state
    finally:
        done.set()
        server.close()
        await server.wait_closed()
