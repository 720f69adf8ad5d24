"""Tokens, TLS and secrets, against the real daemon process."""

from __future__ import annotations

import ssl

import aiohttp
import pytest

from .support.daemon import Daemon, eventually, post
from .support.records import record

SECRET_TOKEN = "tok-3f9a1c55e7"
AMQP_PASSWORD = "pw-8c2d4b19aa"


async def test_tokens_from_a_file_guard_v1_and_optionally_metrics(tmp_path):
    (tmp_path / "tokens").write_text(f"\n{SECRET_TOKEN}\n  other-token  \n")
    daemon = Daemon(tmp_path, ["database"], server={
        "auth_tokens_file": f"{tmp_path}/tokens", "metrics_public": False})
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            for path in ("/v1/dispatchers", "/v1/config", "/v1/dead-letters", "/metrics"):
                async with session.get(daemon.url + path) as resp:
                    assert resp.status == 401, path
                    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="dispatchd"'
            for token in (SECRET_TOKEN, "other-token"):
                headers = {"Authorization": f"Bearer {token}"}
                status, _ = await post(session, daemon.url + "/v1/events", record(), headers=headers)
                assert status == 202
                async with session.get(daemon.url + "/metrics", headers=headers) as resp:
                    assert resp.status == 200
            for path in ("/healthz", "/readyz"):
                async with session.get(daemon.url + path) as resp:
                    assert resp.status == 200
    finally:
        daemon.kill()


async def test_https_with_a_self_signed_certificate(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(tmp_path / "server.pem")
    cert.private_key_pem.write_to_path(tmp_path / "server.key")
    daemon = Daemon(tmp_path, ["database"], server={
        "tls_cert": f"{tmp_path}/server.pem", "tls_key": f"{tmp_path}/server.key"})
    daemon.url = daemon.url.replace("http://", "https://")
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    await daemon.start(ssl=client_tls)
    try:
        connector = aiohttp.TCPConnector(ssl=client_tls)
        async with aiohttp.ClientSession(connector=connector) as session:
            assert (await post(session, daemon.url + "/v1/events", record()))[0] == 202
        async with aiohttp.ClientSession() as plain:  # the system CAs do not know ours
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await post(plain, daemon.url + "/v1/events", record())
        assert "listening on https://" in daemon.logs()
    finally:
        daemon.kill()


async def test_secrets_never_reach_logs_or_status(tmp_path):
    message = {"url": f"amqp://guest:{AMQP_PASSWORD}@127.0.0.1:1/", "connect_timeout": 0.5}
    daemon = Daemon(tmp_path, ["database", "message"], server={"auth_tokens": [SECRET_TOKEN]},
                    dispatchers={"message": message})
    await daemon.start()
    headers = {"Authorization": f"Bearer {SECRET_TOKEN}"}
    seen = []
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            await post(session, daemon.url + "/v1/events", record())
            await post(session, daemon.url + "/v1/events", b"{bad", headers={
                "Content-Type": "application/json", "Authorization": "Bearer wrong-" + SECRET_TOKEN})

            async def tried_and_failed() -> bool:  # the message dispatcher, to reach the broker
                async with session.get(daemon.url + "/v1/dispatchers") as resp:
                    return "unavailable:" in await resp.text()

            await eventually(tried_and_failed)
            for path in ("/v1/dispatchers", "/v1/config", "/metrics", "/v1/dead-letters"):
                async with session.get(daemon.url + path) as resp:
                    seen.append(await resp.text())
            async with session.post(daemon.url + "/v1/config/reload") as resp:
                seen.append(await resp.text())
    finally:
        daemon.kill()
    seen.append(daemon.logs())
    assert "unavailable: cannot reach amqp://guest@127.0.0.1:1/" in seen[0]  # the error is useful
    for text in seen:
        assert SECRET_TOKEN not in text and AMQP_PASSWORD not in text
