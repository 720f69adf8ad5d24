"""TLS on the SQL servers for tests: certificates from a private CA, and a private PostgreSQL
and a private MariaDB started with TLS in temp dirs (this machine's shared servers stay as they are).

Both need root (to run ``initdb``/``postgres`` as the ``postgres`` user, and ``mariadbd``);
CI runs as root, so there they never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import asyncpg
import pytest
import trustme
from asyncmy.errors import OperationalError

from .daemon import free_port
from .sql import HOST, mysql_rows

CLIENT_CN = "dispatchd-client"
# Short: PostgreSQL's pg_stat_ssl cuts a client's DN at 63 bytes.
CLIENT_DN = f"/O=dispatchd/OU=tests/CN={CLIENT_CN}"
SERVER_WAIT = 20.0  # seconds for a server to take TLS connections
# The private servers listen here too; their certificate is for HOST and localhost only, so a
# url with this host reaches a trusted server whose certificate is not for it.
OTHER_HOST = "127.0.0.2"


def _missing(message: str) -> NoReturn:
    """Skip on a developer machine; in CI fail instead."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_root(what: str) -> None:
    """Skip unless root (to run the servers as their own users); in CI (run as root) fail."""
    if os.geteuid() != 0:
        _missing(f"{what} needs root (CI runs as root)")


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


# -- PostgreSQL: a private server with TLS -------------------------------------------------------


@dataclass
class PrivatePostgres:
    """A ``postgres`` of the test's own on 127.0.0.1:``port``: TCP only with TLS, trust auth."""

    directory: Path
    port: int
    pki: Pki

    @property
    def data(self) -> Path:
        return self.directory / "data"

    async def admin(self, *statements: str) -> None:
        """Run ``statements`` as ``postgres`` over the Unix socket, outside any test database."""
        conn = await asyncpg.connect(host=str(self.directory), port=self.port, user="postgres",
                                     database="postgres", timeout=5)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()


def _pg_bin() -> Path | None:
    """The newest PostgreSQL's bin directory (Debian keeps them out of PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit()
                   else 0)
    return found[-1].parent if found else None


def _as_postgres(directory: Path) -> dict[str, Any]:
    """Popen/run arguments running a program as the ``postgres`` OS user: initdb and postgres
    refuse root."""
    return {"user": "postgres", "group": "postgres", "extra_groups": [], "cwd": directory,
            "env": {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}}


# Only TLS over TCP (a plain connection finds no line); the Unix socket is the tests' admin way in.
# With ssl_ca_file set the server asks for a client certificate, checks one that comes and shows
# its subject in pg_stat_ssl; trust lets the connections without one in too.
PG_HBA = ("local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
          f"hostssl all all {OTHER_HOST}/32 trust\n")


def _start_postgres(server: PrivatePostgres, bin_dir: Path) -> subprocess.Popen[bytes]:
    pki, run_as = server.pki, _as_postgres(server.directory)
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(server.data), "-U", "postgres", "-A", "trust",
         "-E", "UTF8", "--no-sync", "--no-instructions"],
        check=True, capture_output=True, timeout=60, **run_as)
    hba = server.data / "pg_hba.conf"
    hba.write_text(PG_HBA)
    shutil.chown(hba, "postgres", "postgres")
    log = (server.directory / "postgres.log").open("wb")
    with log:
        return subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(server.data), "-p", str(server.port),
             "-k", str(server.directory), "-c", f"listen_addresses={HOST},{OTHER_HOST}",
             "-c", "ssl=on", "-c", f"ssl_cert_file={pki.server_cert}",
             "-c", f"ssl_key_file={pki.server_key}", "-c", f"ssl_ca_file={pki.ca}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            stdout=log, stderr=subprocess.STDOUT, **run_as)


async def _wait_postgres(server: PrivatePostgres, process: subprocess.Popen[bytes]) -> None:
    await _wait_up("postgres", lambda: server.admin("SELECT 1"),
                   (OSError, asyncpg.PostgresError, asyncpg.InterfaceError), process,
                   server.directory / "postgres.log")


async def _wait_up(name: str, probe: Callable[[], Awaitable[Any]],
                   not_yet: tuple[type[BaseException], ...], process: subprocess.Popen[bytes],
                   log: Path) -> None:
    """Until ``probe`` succeeds; the end of ``log`` when the server exits or takes too long."""
    deadline = time.monotonic() + SERVER_WAIT
    while True:
        try:
            await probe()
            return
        except not_yet:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"the private {name} did not start in {SERVER_WAIT} s:\n{tail}")
        await asyncio.sleep(0.1)


def _stop(process: subprocess.Popen[bytes], how: signal.Signals) -> None:
    process.send_signal(how)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def private_postgresql_tls() -> Iterator[PrivatePostgres]:
    """A fresh ``postgres`` with TLS (a certificate of a test CA), stopped and removed after."""
    require_root("a private PostgreSQL server")
    bin_dir = _pg_bin()
    if bin_dir is None:
        _missing("postgres is not installed (Debian package postgresql)")
    directory = Path(tempfile.mkdtemp(prefix="dispatchd-pg-tls-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        pki = Pki.write(directory, owner="postgres")  # the directory too: initdb and the socket
        server = PrivatePostgres(directory, free_port(), pki)
        process = _start_postgres(server, bin_dir)
        asyncio.run(_wait_postgres(server, process))
        yield server
    finally:
        if process is not None:
            _stop(process, signal.SIGINT)  # PostgreSQL's fast shutdown (SIGTERM waits for clients)
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
        return await mysql_rows(sql, params, db=database, connect_timeout=5, **where)


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
         f"--port={port}", f"--bind-address={HOST},{OTHER_HOST}",
         f"--socket={directory / 'mariadb.sock'}",
         f"--pid-file={directory / 'mariadb.pid'}", f"--log-error={directory / 'error.log'}",
         f"--ssl-cert={pki.server_cert}", f"--ssl-key={pki.server_key}", f"--ssl-ca={pki.ca}",
         "--skip-log-bin", "--innodb-buffer-pool-size=16M", "--performance-schema=OFF"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _wait_mariadb(server: PrivateMariadb, process: subprocess.Popen[bytes]) -> None:
    await _wait_up("mariadbd", lambda: server.query("SELECT 1"), (OSError, OperationalError),
                   process, server.directory / "error.log")


@contextlib.contextmanager
def private_mariadb_tls() -> Iterator[PrivateMariadb]:
    """A fresh ``mariadbd`` with TLS (a certificate of a test CA), stopped and removed after."""
    require_root("a private MariaDB server")
    for program in ("mariadb-install-db", "mariadbd"):
        if _program(program) is None:
            _missing(f"{program} is not installed (Debian package mariadb-server)")
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
            _stop(process, signal.SIGTERM)  # mariadbd shuts down cleanly
        shutil.rmtree(directory, ignore_errors=True)
