"""``server.instance`` from the real process: in status, the CLI, metrics and every log line,
and kept until a restart like the rest of ``[server]``."""

from __future__ import annotations

import json
import signal
import socket
import subprocess

import aiohttp

from .support.daemon import DISPATCHD, Daemon
from .test_cli_daemon import ENV
from .test_observability import sample


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as resp:
        return resp.status, await resp.text()


async def test_the_instance_name_is_in_status_cli_metrics_and_json_logs(tmp_path):
    daemon = Daemon(tmp_path, ["database"], server={"instance": "replica-7"},
                    log={"format": "json"})
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            _, status = await get(session, daemon.url + "/v1/status")
            assert json.loads(status)["instance"] == "replica-7"
            _, metrics = await get(session, daemon.url + "/metrics")
            assert sample(metrics, "dispatchd_info", dispatchd_instance="replica-7",
                          version="0.1.0") == 1.0
            shown = subprocess.run([str(DISPATCHD), "status", "-c", str(daemon.config)],
                                   capture_output=True, text=True, env=ENV, timeout=60)
            assert shown.stdout.startswith(f"dispatchd replica-7 pid {daemon.proc.pid} at "), \
                shown.stdout

            # a new name waits for a restart, as every [server] key does
            daemon.write_config(["database"], server={"instance": "renamed"})
            async with session.post(daemon.url + "/v1/config/reload") as resp:
                assert (await resp.json())["restart_required"] == ["server.instance"]
            _, status = await get(session, daemon.url + "/v1/status")
            assert json.loads(status)["instance"] == "replica-7"
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    finally:
        daemon.kill()
    lines = [json.loads(line) for line in daemon.logs().splitlines() if line.startswith("{")]
    assert any("listening on" in line["message"] for line in lines)
    assert {line.get("instance") for line in lines} == {"replica-7"}


async def test_the_host_name_is_the_default_and_text_lines_carry_it(tmp_path):
    daemon = Daemon(tmp_path, ["database"])
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            _, status = await get(session, daemon.url + "/v1/status")
        assert json.loads(status)["instance"] == socket.gethostname()
    finally:
        daemon.kill()
    listening = next(line for line in daemon.logs().splitlines() if "listening on" in line)
    assert f" {socket.gethostname()} INFO    dispatchd.service: dispatchd listening on" in listening
