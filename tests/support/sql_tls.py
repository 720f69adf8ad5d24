"""TLS on the SQL servers for tests: certificates from a private CA, this machine's PostgreSQL
switched to TLS for a while, and a private MariaDB started with TLS.

Both need root (to hand PostgreSQL its key as the ``postgres`` user, and to run ``mariadbd``);
CI runs as root, so there they never skip. PostgreSQL's TLS is switched on with ``ALTER SYSTEM``
and a reload, and switched back the same way afterwards: another process's test that counts on
the server having no TLS should not run against it at the same moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncmy
import asyncpg
import pytest
import trustme
from asyncmy.errors import OperationalError

from .daemon import free_port
from .sql import HOST, PORTS

CLIENT_CN = "dispatchd-client"
# Short: PostgreSQL's pg_stat_ssl cuts a client's DN at 63 bytes.
CLIENT_DN = f"/O=dispatchd/OU=tests/CN={CLIENT_CN}"
PG_TLS_PREFIX = "dispatchd-pg-tls-"  # the temp dir of the server's certificate and key
PG_TLS_SETTINGS = ("ssl_cert_file", "ssl_key_file", "ssl_ca_file", "ssl")
SERVER_WAIT = 20.0  # seconds for a server to take TLS connections


def require_root(what: str) -> None:
    """Skip unless root on a developer machine; in CI (run as root) fail instead."""
    if os.geteuid() == 0:
        return
    message = f"{what} needs root (CI runs as root)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate it signed (127.0.0.1 and localhost), a client certificate it
    signed (subject ``CLIENT_DN``), and another CA that signed nothing here."""

    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def write(cls, directory: Path, owner: str | None = None) -> Pki:
        """The files in ``directory``; with ``owner``, the server's files are that user's."""
        ca, other = trustme.CA(), trustme.CA()
        server = ca.issue_cert(HOST, "localhost")
        client = ca.issue_cert(CLIENT_CN, common_name=CLIENT_CN, organization_name="dispatchd",
                               organization_unit_name="tests")
        pki = cls(*(directory / name for name in (
            "ca.pem", "other-ca.pem", "server.pem", "server.key", "client.pem", "client.key")))
        ca.cert_pem.write_to_path(str(pki.ca))
        other.cert_pem.write_to_path(str(pki.other_ca))
        server.cert_chain_pems[0].write_to_path(str(pki.server_cert))
        server.private_key_pem.write_to_path(str(pki.server_key))
        client.cert_chain_pems[0].write_to_path(str(pki.client_cert))
        client.private_key_pem.write_to_path(str(pki.client_key))
        directory.chmod(0o755)  # the server user traverses it
        for path in (pki.ca, pki.other_ca, pki.server_cert, pki.client_cert):
            path.chmod(0o644)
        for path in (pki.server_key, pki.client_key):
            path.chmod(0o600)  # PostgreSQL refuses a key others can read
        if owner is not None:
            for path in (directory, pki.ca, pki.server_cert, pki.server_key):
                shutil.chown(path, owner, owner)
        return pki

    def client_context(self, verify: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


# -- PostgreSQL: this machine's server, with TLS for a while ------------------------------------


async def _pg_admin(*statements: str) -> list[Any]:
    conn = await asyncpg.connect(host=HOST, port=PORTS["postgresql"], user="postgres",
                                 database="postgres")
    try:
        return [await conn.fetch(statement) for statement in statements]
    finally:
        await conn.close()


async def _pg_tls_works(pki: Pki) -> bool:
    try:
        conn = await asyncpg.connect(host=HOST, port=PORTS["postgresql"], user="postgres",
                                     database="postgres", ssl=pki.client_context(), timeout=3)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    try:
        return bool(await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))
    finally:
        await conn.close()


async def _pg_wait(pki: Pki, tls: bool) -> None:
    deadline = time.monotonic() + SERVER_WAIT
    while await _pg_tls_works(pki) != tls:
        if time.monotonic() > deadline:
            state = "take" if tls else "stop taking"
            raise RuntimeError(f"PostgreSQL did not {state} TLS connections in {SERVER_WAIT} s "
                               "(see its log: the certificate files may be unreadable)")
        await asyncio.sleep(0.2)


async def _pg_alter(values: dict[str, str | None]) -> None:
    """``ALTER SYSTEM SET`` (or ``RESET`` for None) each setting, then reload the server."""
    statements = []
    for name, value in values.items():
        if value is None:
            statements.append(f"ALTER SYSTEM RESET {name}")
        else:
            quoted = value.replace("'", "''")
            statements.append(f"ALTER SYSTEM SET {name} = '{quoted}'")
    await _pg_admin(*statements, "SELECT pg_reload_conf()")


@contextlib.contextmanager
def postgresql_tls() -> Iterator[Pki]:
    """This machine's PostgreSQL with TLS on (a certificate of a test CA), as it was afterwards.

    Settings that an earlier ``ALTER SYSTEM`` had made are put back, the rest reset.
    """
    require_root("switching PostgreSQL to TLS")
    rows = asyncio.run(_pg_admin(
        "SELECT name, setting, sourcefile FROM pg_settings WHERE name = ANY('{"
        + ",".join(PG_TLS_SETTINGS) + "}')"))[0]
    settings = {name: setting for name, setting, _ in rows}
    if PG_TLS_PREFIX in settings["ssl_cert_file"]:
        # A run killed before its teardown left its settings: reset them (its files may be gone,
        # and a server restarted with ssl on and no key would not start).
        before: dict[str, str | None] = dict.fromkeys(PG_TLS_SETTINGS)
    else:
        before = {name: setting if (sourcefile or "").endswith("postgresql.auto.conf") else None
                  for name, setting, sourcefile in rows}
        if settings["ssl"] == "on":
            pytest.fail("PostgreSQL already has TLS on: these tests switch it on with their own "
                        "CA and would turn it off afterwards", pytrace=False)
    directory = Path(tempfile.mkdtemp(prefix=PG_TLS_PREFIX))
    try:
        pki = Pki.write(directory, owner="postgres")
        try:
            asyncio.run(_pg_alter({"ssl_cert_file": str(pki.server_cert),
                                   "ssl_key_file": str(pki.server_key),
                                   "ssl_ca_file": str(pki.ca),  # verifies a client's certificate
                                   "ssl": "on"}))
            asyncio.run(_pg_wait(pki, tls=True))
            yield pki
        finally:
            asyncio.run(_pg_alter(before))
            asyncio.run(_pg_wait(pki, tls=False))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- MariaDB: a private server with TLS ----------------------------------------------------------


@dataclass
class PrivateMariadb:
    """A ``mariadbd`` of the test's own on 127.0.0.1:``port``; root has no password."""

    directory: Path
    port: int
    pki: Pki

    @property
    def socket(self) -> str:
        return str(self.directory / "mariadb.sock")

    async def query(self, sql: str, *params: Any, database: str | None = None,
                    **connect: Any) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` as root over the Unix socket, or with ``connect``'s arguments."""
        where: dict[str, Any] = connect or {"unix_socket": self.socket, "user": "root"}
        conn = await asyncmy.connect(db=database, autocommit=True, connect_timeout=5, **where)
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql, params or None)
                return [tuple(row) for row in await cur.fetchall()]
        finally:
            conn.close()


def _program(name: str) -> str | None:
    """``name`` on PATH or in /usr/sbin (where Debian puts mariadbd, often off a user's PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def _start_mariadb(directory: Path, port: int, pki: Pki) -> subprocess.Popen[bytes]:
    data = directory / "data"
    subprocess.run(
        [str(_program("mariadb-install-db")), "--no-defaults", f"--datadir={data}", "--user=root",
         "--auth-root-authentication-method=normal", "--skip-test-db"],
        check=True, capture_output=True, timeout=60)
    return subprocess.Popen(
        [str(_program("mariadbd")), "--no-defaults", f"--datadir={data}", "--user=root",
         f"--port={port}", f"--bind-address={HOST}", f"--socket={directory / 'mariadb.sock'}",
         f"--pid-file={directory / 'mariadb.pid'}", f"--log-error={directory / 'error.log'}",
         f"--ssl-cert={pki.server_cert}", f"--ssl-key={pki.server_key}", f"--ssl-ca={pki.ca}",
         "--skip-log-bin", "--innodb-buffer-pool-size=16M", "--performance-schema=OFF"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _wait_mariadb(server: PrivateMariadb, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SERVER_WAIT
    while True:
        try:
            await server.query("SELECT 1")
            return
        except (OSError, OperationalError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            log = server.directory / "error.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"the private mariadbd did not start in {SERVER_WAIT} s:\n{tail}")
        await asyncio.sleep(0.1)


@contextlib.contextmanager
def private_mariadb_tls() -> Iterator[PrivateMariadb]:
    """A fresh ``mariadbd`` with TLS (a certificate of a test CA), stopped and removed after."""
    require_root("a private MariaDB server")
    for program in ("mariadb-install-db", "mariadbd"):
        if _program(program) is None:
            message = f"{program} is not installed (Debian package mariadb-server)"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
    directory = Path(tempfile.mkdtemp(prefix="dispatchd-mariadb-tls-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        pki = Pki.write(directory)
        server = PrivateMariadb(directory, free_port(), pki)
        process = _start_mariadb(directory, server.port, pki)
        asyncio.run(_wait_mariadb(server, process))
        yield server
    finally:
        if process is not None:
            process.terminate()  # SIGTERM: mariadbd shuts down cleanly
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(directory, ignore_errors=True)
