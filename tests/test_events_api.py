"""``GET /v1/events`` and ``GET /v1/events/{id}`` on the real daemon with the SQLite store, and
``dispatchd events``: filters, order, keyset pages while events arrive, errors, auth, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from .support import TESTPLUGINS
from .support.daemon import DISPATCHD, Daemon
from .support.records import record

START = datetime(2026, 12, 1, 6, 0)
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    filter(None, [str(TESTPLUGINS), os.environ.get("PYTHONPATH")]))}


def event(i: int, rng: random.Random, **overrides: Any) -> dict[str, Any]:
    """A record of one of 3 clusters (cluster or node events), level and second chosen by ``rng``:
    many ties on every sort key."""
    c = rng.randrange(3)
    body = record(level=rng.choice(["INFO", "WARNING", "ERROR"]),
                  timestamp=(START + timedelta(seconds=rng.randrange(60))).isoformat() + "Z")
    if rng.random() < 0.5:
        body["action"]["entity"] = {"type": "CLUSTER", "id": f"c{c}", "name": f"cluster-{c}"}
    else:
        n = rng.randrange(4)
        body["action"]["entity"] = {"type": "NODE", "id": f"c{c}-n{n}", "name": f"node-{n}",
                                    "cluster_id": f"c{c}"}
        body["action"]["action"] = "NODE_CHECK"
    body.update(overrides)
    return body


async def post_delivered(session: aiohttp.ClientSession, url: str,
                         records: list[dict[str, Any]]) -> list[str]:
    async with session.post(url + "/v1/events?wait=delivered", json=records) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        ids: list[str] = body["ids"]
        return ids


async def get(session: aiohttp.ClientSession, url: str,
              params: list[tuple[str, str]] | None = None) -> tuple[int, Any]:
    async with session.get(url, params=params) as resp:
        return resp.status, await resp.json()


async def events(session: aiohttp.ClientSession, url: str, *params: tuple[str, str]) -> list[Any]:
    status, body = await get(session, url + "/v1/events", list(params))
    assert status == 200, body
    return list(body["events"])


async def test_filters_order_and_ids_over_http(make_daemon):
    daemon = make_daemon(["database"])
    await daemon.start()
    rng = random.Random(1)
    async with aiohttp.ClientSession() as session:
        await post_delivered(session, daemon.url, [event(i, rng) for i in range(120)])
        every = await events(session, daemon.url, ("limit", "1000"))
        assert len(every) == 120
        stamps = [e["timestamp"] for e in every]
        assert stamps == sorted(stamps, reverse=True)  # newest first by default

        # Each filter, repeated, and the level by name, number and any case.
        found = await events(session, daemon.url, ("cluster_id", "c0"), ("cluster_id", "c2"),
                             ("level", "error"), ("level", "30"), ("limit", "1000"))
        assert {e["id"] for e in found} == {e["id"] for e in every if e["cluster_id"] in
                                            ("c0", "c2") and e["level"] in ("ERROR", "WARNING")}
        for name, value in (("oid", "c1-n2"), ("oname", "node-3"), ("otype", "NODE"),
                            ("action", "NODE_CHECK"), ("project", "project-1")):
            found = await events(session, daemon.url, (name, value), ("limit", "1000"))
            assert found and {e["id"] for e in found} == \
                {e["id"] for e in every if e[name] == value}, name

        ordered = await events(session, daemon.url, ("sort", "level:desc,oname"), ("limit", "1000"))
        rank = {"INFO": 20, "WARNING": 30, "ERROR": 40}
        assert [(-rank[e["level"]], e["oname"]) for e in ordered] == \
            sorted((-rank[e["level"]], e["oname"]) for e in every)

        one = every[0]
        for ident in (one["id"], one["id"][:8], one["id"][:8].upper(), one["id"][:13]):
            status, body = await get(session, f"{daemon.url}/v1/events/{ident}")
            assert status == 200 and body == {"event": one}, ident


async def test_paging_while_events_arrive_sees_each_row_once(make_daemon):
    daemon = make_daemon(["database"])
    await daemon.start()
    rng = random.Random(2)
    async with aiohttp.ClientSession() as session:
        before = set(await post_delivered(session, daemon.url, [event(i, rng) for i in range(600)]))
        arrived: set[str] = set()

        async def arrive() -> None:  # times spread over the same minute: before and after the pages
            for batch in range(30):
                batch_rng = random.Random(100 + batch)
                arrived.update(await post_delivered(
                    session, daemon.url, [event(i, batch_rng) for i in range(10)]))

        async def page_through(sort: str) -> list[str]:
            seen: list[str] = []
            while True:
                marker = [("marker", seen[-1])] if seen else []
                page = await events(session, daemon.url, ("sort", sort), ("limit", "25"), *marker)
                seen += [e["id"] for e in page]
                await asyncio.sleep(0.01)
                if len(page) < 25:
                    return seen

        sorts = ["timestamp:desc", "timestamp:asc", "oname,level:desc", "cluster_id:desc,otype"]
        results = await asyncio.gather(arrive(), *(page_through(sort) for sort in sorts))
    for sort, seen in zip(sorts, results[1:], strict=True):
        assert len(seen) == len(set(seen)), f"{sort}: a row was seen twice"
        assert before <= set(seen), f"{sort}: {len(before - set(seen))} rows were skipped"
        assert set(seen) <= before | arrived
    # The inserts did overlap the paging: pages met some of them (those sorted after the marker).
    assert any(set(seen) & arrived for seen in results[1:])


async def test_bad_parameters_unknown_and_ambiguous_ids(make_daemon):
    daemon = make_daemon(["database"])
    await daemon.start()
    twins = ["0123abcd-0000-4000-8000-000000000001", "0123abcd-0000-4000-8000-000000000002"]
    async with aiohttp.ClientSession() as session:
        await post_delivered(session, daemon.url, [record(id=i) for i in twins])
        for params, field in (
            ([("colour", "red")], "colour"), ([("limit", "5000")], "limit"),
            ([("sort", "timestamp:sideways")], "sort"), ([("level", "LOUD")], "level"),
            ([("since", "last week")], "since"), ([("marker", "fedcba98-0000")], "marker"),
            ([("limit", "1"), ("limit", "2")], "limit"),
        ):
            status, body = await get(session, daemon.url + "/v1/events", params)
            assert status == 400, (params, body)
            assert body["error"]["code"] == "invalid_parameter"
            (detail,) = body["error"]["details"]
            assert detail["field"] == field and detail["message"]
            assert field in body["error"]["message"]
        for ident, status, code in (
            ("0123abcd", 409, "ambiguous_id"), ("0123abcd-0000-4000-8000-000000000001", 200, None),
            ("fedcba98", 404, "event_not_found"), ("fedcba98-0000-4000-8000-000000000000", 404,
                                                   "event_not_found"),
            ("0123abc", 400, "invalid_parameter"), ("0123abcd-zz", 400, "invalid_parameter"),
        ):
            got, body = await get(session, f"{daemon.url}/v1/events/{ident}")
            assert got == status and (code is None or body["error"]["code"] == code), (ident, body)


async def test_without_the_database_dispatcher_there_is_nothing_to_query(make_daemon):
    daemon = make_daemon(["jsonfile"])
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        for path in ("/v1/events", "/v1/events/0123abcd"):
            status, body = await get(session, daemon.url + path)
            assert status == 409 and body["error"]["code"] == "no_event_store", body
            assert "database dispatcher is not enabled" in body["error"]["message"]
        status, body = await get(session, daemon.url + "/v1/events", [("nope", "1")])
        assert status == 400  # the parameters are checked first, store or not


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DISPATCHD), "events", *args, "-c", str(daemon.config)],
                          capture_output=True, text=True, env=ENV, timeout=60)


async def test_the_cli_with_a_token_as_a_table_and_as_json(make_daemon):
    daemon = make_daemon(["database"], server={"auth_tokens": [TOKEN]})
    await daemon.start()
    rng = random.Random(3)
    async with aiohttp.ClientSession() as session:
        status, body = await get(session, daemon.url + "/v1/events")
        assert status == 401 and body["error"]["code"] == "unauthorized"
        async with session.post(daemon.url + "/v1/events?wait=delivered", headers=AUTH,
                                json=[event(i, rng) for i in range(30)]) as resp:
            assert resp.status == 200
        async with session.get(daemon.url + "/v1/events", headers=AUTH,
                               params=[("oid", "c1"), ("limit", "1000")]) as resp:
            assert resp.status == 200
            expected = (await resp.json())["events"]
    assert expected

    listed = cli(daemon, "--oid", "c1", "--limit", "1000")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "TIMESTAMP", "LEVEL", "OTYPE", "ONAME", "OID", "CLUSTER",
                                "ACTION", "STATUS", "STATUS", "REASON"]
    assert [line.split()[0] for line in lines[1:]] == [e["id"][:8] for e in expected]
    assert lines[1].split()[1] == expected[0]["timestamp"].split(".")[0] + "Z"
    assert listed.stderr.strip() == f"{len(expected)} events"

    as_json = cli(daemon, "--oid", "c1", "--oid", "c2", "--level", "error", "--json")
    assert as_json.returncode == 0, as_json.stderr
    got = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert got and all(e["oid"] in ("c1", "c2") and e["level"] == "ERROR" for e in got)

    paged = cli(daemon, "--limit", "2", "--full-id")
    assert paged.returncode == 0 and f"--marker {paged.stdout.splitlines()[-1].split()[0]}" \
        in paged.stderr

    shown = cli(daemon, "show", expected[0]["id"][:8], "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout) == expected[0]
    human = cli(daemon, "show", expected[0]["id"])
    assert f"id: {expected[0]['id']}" in human.stdout and "meta_data: {" in human.stdout

    missing = cli(daemon, "show", "fedcba98")
    assert missing.returncode == 1 and "no event id starts with 'fedcba98'" in missing.stderr
    bad = cli(daemon, "--level", "LOUD")
    assert bad.returncode == 1 and "level" in bad.stderr and "Traceback" not in bad.stderr
