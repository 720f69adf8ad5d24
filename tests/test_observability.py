"""What an operator reads, from the real process: metrics, the start-up and shutdown lines,
access log lines, and one time format."""

from __future__ import annotations

import re
import signal

import aiohttp

from .support.daemon import Daemon, eventually, post
from .support.records import record

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or ``None`` if it is absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in metrics.splitlines():
        key, _, value = line.rpartition(" ")
        if key == (f"{name}{{{wanted}}}" if wanted else name):
            return float(value)
    return None


async def test_metrics_count_every_error_and_list_every_dispatcher_at_zero(tmp_path):
    daemon = Daemon(tmp_path, ["database", "failing"], server={"max_body_bytes": 2000})
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(daemon.url + "/metrics") as resp:
                before = await resp.text()
            for name in ("database", "failing", "jsonfile"):  # jsonfile: configured, not enabled
                for family in ("dispatchd_dispatcher_delivered_total",
                               "dispatchd_dispatcher_dead_letters",
                               "dispatchd_dispatcher_backlog"):
                    assert sample(before, family, dispatcher=name) == 0.0, (family, name)
            status, _ = await post(session, daemon.url + "/v1/events", [record()] * 20)
            assert status == 413
            async with session.get(daemon.url + "/v1/dead-letters?dispatcher=nope") as resp:
                assert resp.status == 404
            status, _ = await post(session, daemon.url + "/v1/events", b"{",
                                   headers={"Content-Type": "application/json"})
            assert status == 400
            async with session.get(daemon.url + "/metrics") as resp:
                after = await resp.text()
        rejected = "dispatchd_requests_rejected_total"
        assert sample(after, rejected, code="request_entity_too_large") == 1.0
        assert sample(after, rejected, code="unknown_dispatcher") == 1.0
        assert sample(after, rejected, code="bad_json") == 1.0
    finally:
        daemon.kill()


async def test_dead_letter_times_are_rfc_3339(tmp_path):
    daemon = Daemon(tmp_path, ["failing"])
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            assert (await post(session, daemon.url + "/v1/events", record()))[0] == 202

            async def letters() -> list:
                async with session.get(daemon.url + "/v1/dead-letters?dispatcher=failing") as resp:
                    return (await resp.json())["dead_letters"]

            [letter] = await eventually(letters)
            assert RFC3339.fullmatch(letter["failed_at"]), letter["failed_at"]
            async with session.get(daemon.url + "/v1/status") as resp:
                loaded_at = (await resp.json())["config"]["loaded_at"]
            assert RFC3339.fullmatch(loaded_at), loaded_at
    finally:
        daemon.kill()


async def test_start_and_shutdown_lines_name_what_an_operator_asks(tmp_path):
    daemon = Daemon(tmp_path, ["database", "jsonfile"], log={"access": True})
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        status, _ = await post(session, daemon.url + "/v1/events", [record()] * 4)
        assert status == 202
        await eventually(lambda: len(daemon.lines("events.jsonl")) == 4)
        # jsonfile is switched off while running: the shutdown line still counts what it did.
        daemon.write_config(["database"])
        await eventually(lambda: "reload 2 applied" in daemon.logs())
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    logs = daemon.logs()
    start = next(line for line in logs.splitlines() if "listening on" in line)
    assert str(daemon.config) in start and f"{tmp_path}/spool.db" in start
    assert "enabled: database, jsonfile" in start
    stop = next(line for line in logs.splitlines() if "stopped ◆" in line)
    assert "jsonfile 4/0/0" in stop and "database 4/0/0" in stop, stop
    access = [line for line in logs.splitlines() if "dispatchd.access" in line]
    assert any("/v1/events" in line and "202" in line for line in access), access
