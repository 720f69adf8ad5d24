"""The database dispatcher over real TLS: a private PostgreSQL and a private MariaDB, each started
with TLS for the module (this machine's shared servers are left alone). Each server is checked
the same way: a batch stored with every connection encrypted, a server certificate from another
CA refused as ``Unavailable`` with a clear, password-free reason, a trusted certificate that is
not for the url's host refused as well (the servers also listen on ``OTHER_HOST``),
``ssl_verify = false`` connecting anyway, and a client certificate. Both need root, to run the
servers (CI runs as root: with CI=true they never skip).
"""

from __future__ import annotations

import logging
import uuid

import pytest
from asyncmy.errors import OperationalError
from sqlalchemy import func, select

from dispatchd import Unavailable
from dispatchd.dispatchers.database import DatabaseDispatcher, DatabaseOptions
from dispatchd.dispatchers.event_table import EVENT
from dispatchd.models import Record

from .support.records import record
from .support.sql import HOST, ServerDb, fresh_database, user_with_password
from .support.sql_tls import (
    CLIENT_DN,
    OTHER_HOST,
    Pki,
    PrivateMariadb,
    PrivatePostgres,
    private_mariadb_tls,
    private_postgresql_tls,
)

SECRET = "tls-S3cret/pw@x"
VERIFY_FAILED = "certificate verify failed"


def records(n: int) -> list[Record]:
    return [Record.model_validate(record()) for _ in range(n)]


async def stored(backend: DatabaseDispatcher) -> int:
    """Rows in the event table, read through the dispatcher's own (reader) connections."""
    rows = await backend.fetch(select(func.count().label("n")).select_from(EVENT))
    return int(rows[0]["n"])


def assert_not_for_the_host(exc: Unavailable) -> None:
    text = str(exc)
    assert f"TLS: {VERIFY_FAILED}" in text and OTHER_HOST in text, text
    assert "trusted but not for the url's host" in text and "ssl_ca_file" not in text, text


def assert_refused_clearly(exc: Unavailable, url_shown: str) -> None:
    text = str(exc)
    assert f"TLS: {VERIFY_FAILED}" in text and "ssl_ca_file must hold the CA" in text, text
    assert url_shown in text and SECRET not in text, text


@pytest.mark.parametrize(("option", "says"), [
    ("ssl_ca_file", "ssl_ca_file '{path}' cannot be loaded: no such file or directory"),
    ("ssl_cert_file", "ssl_cert_file '{path}' cannot be loaded: no such file or directory"),
])
async def test_a_tls_file_that_cannot_be_loaded_fails_the_start_naming_the_option(
        tmp_path, option, says):
    path = str(tmp_path / "missing.pem")
    backend = DatabaseDispatcher("database", DatabaseOptions(
        url="postgresql://u@127.0.0.1/x", ssl=True, **{option: path}))
    with pytest.raises(ValueError) as info:
        await backend.start()
    assert str(info.value).lower() == says.format(path=path).lower()
    (tmp_path / "garbage.pem").write_text("not a certificate")
    with pytest.raises(ValueError, match="ssl_ca_file .* cannot be loaded: no certificate"):
        DatabaseOptions(url="mysql://u@127.0.0.1/x", ssl=True,
                        ssl_ca_file=str(tmp_path / "garbage.pem")).ssl_context()


# -- PostgreSQL: a private server with TLS ------------------------------------------------------


@pytest.fixture(scope="module")
def postgres():
    with private_postgresql_tls() as server:
        yield server


@pytest.fixture
def pg_tls(postgres: PrivatePostgres):
    return postgres.pki


@pytest.fixture
async def pg_db(postgres: PrivatePostgres):
    async with fresh_database("postgresql", port=postgres.port) as db:
        yield db


async def pg_connections(db: ServerDb) -> list[tuple[bool, str | None]]:
    """(ssl, client_dn) of every dispatchd connection to ``db``, from the server's view."""
    return await db.query(
        "SELECT s.ssl, s.client_dn FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
        " WHERE a.datname = $1 AND a.application_name LIKE 'dispatchd %'", db.name)


async def test_postgresql_stores_a_batch_with_every_connection_over_tls(pg_tls: Pki, pg_db,
                                                                         started):
    backend = await started(pg_db.url(), ssl=True, ssl_ca_file=str(pg_tls.ca))
    await backend.dump_batch(records(3))
    assert await stored(backend) == 3  # the readers' pool too
    connections = await pg_connections(pg_db)
    assert len(connections) >= 2 and all(ssl for ssl, _ in connections), connections


async def test_postgresql_with_a_server_certificate_of_another_ca_is_unavailable(
        pg_tls: Pki, pg_db, started, caplog):
    caplog.set_level(logging.WARNING)
    async with user_with_password(pg_db, SECRET) as user:
        backend = await started(pg_db.url(user=user), password=SECRET, ssl=True,
                                ssl_ca_file=str(pg_tls.other_ca), connect_timeout=3)
        # Start goes on (the server may get a new certificate) and says why it cannot connect.
        assert VERIFY_FAILED in caplog.text and SECRET not in caplog.text
        with pytest.raises(Unavailable) as info:
            await backend.dump_batch(records(1))
        assert_refused_clearly(info.value,
                               f"postgresql://{user}@{HOST}:{pg_db.port}/{pg_db.name}")
        assert backend.report()["connected"] is False
        assert await pg_connections(pg_db) == []


async def test_postgresql_with_a_certificate_not_for_the_urls_host_is_unavailable(
        pg_tls: Pki, pg_db, started):
    backend = await started(pg_db.url(host=OTHER_HOST), ssl=True, ssl_ca_file=str(pg_tls.ca),
                            connect_timeout=3)
    with pytest.raises(Unavailable) as info:
        await backend.dump_batch(records(1))
    assert_not_for_the_host(info.value)
    assert await pg_connections(pg_db) == []


async def test_postgresql_without_verification_connects_whatever_signed_the_server(
        pg_tls: Pki, pg_db, started):
    backend = await started(pg_db.url(), ssl=True, ssl_ca_file=str(pg_tls.other_ca),
                            ssl_verify=False)
    await backend.dump_batch(records(2))
    assert await stored(backend) == 2
    assert all(ssl for ssl, _ in await pg_connections(pg_db))


async def test_postgresql_gets_the_client_certificate(pg_tls: Pki, pg_db, started):
    backend = await started(pg_db.url(), ssl=True, ssl_ca_file=str(pg_tls.ca),
                            ssl_cert_file=str(pg_tls.client_cert),
                            ssl_key_file=str(pg_tls.client_key))
    await backend.dump_batch(records(1))
    connections = await pg_connections(pg_db)
    # The server verified it against its ssl_ca_file (a bad one would fail the handshake).
    assert connections and all(ssl and dn == CLIENT_DN for ssl, dn in connections), connections


# -- MariaDB: a private server with TLS ---------------------------------------------------------


@pytest.fixture(scope="module")
def mariadb():
    with private_mariadb_tls() as server:
        yield server


@pytest.fixture
async def my_db(mariadb: PrivateMariadb):
    """A fresh database on the private server and a user that must use TLS there (password
    ``SECRET``); the user is ``ServerDb``'s admin stand-in in ``url(user=…)``."""
    db = ServerDb("mysql", f"dispatchd_test_{uuid.uuid4().hex[:12]}", port=mariadb.port)
    user = f"dsp_{uuid.uuid4().hex[:10]}"
    await mariadb.query(f"CREATE DATABASE {db.name}")
    await mariadb.query(f"CREATE USER '{user}'@'{HOST}' IDENTIFIED BY '{SECRET}' REQUIRE SSL")
    await mariadb.query(f"GRANT ALL ON {db.name}.* TO '{user}'@'{HOST}'")
    try:
        yield db, user
    finally:
        await mariadb.query(f"DROP USER IF EXISTS '{user}'@'{HOST}'")
        await mariadb.query(f"DROP DATABASE IF EXISTS {db.name}")


async def ssl_cipher(pool) -> str:
    """``Ssl_cipher`` of a connection of one of the store's pools: empty when not TLS."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        return str((await cur.fetchone())[1])


async def test_mariadb_stores_a_batch_with_every_connection_over_tls(mariadb: PrivateMariadb,
                                                                      my_db, started):
    db, user = my_db
    with pytest.raises(OperationalError, match="Access denied"):  # the user must use TLS
        await mariadb.query("SELECT 1", host=HOST, port=mariadb.port, user=user,
                            password=SECRET)
    backend = await started(db.url(user=user), password=SECRET, ssl=True,
                            ssl_ca_file=str(mariadb.pki.ca))
    await backend.dump_batch(records(3))
    assert await stored(backend) == 3
    store = backend._store
    assert await ssl_cipher(store._writer) and await ssl_cipher(store._readers)
    assert (await mariadb.query(f"SELECT count(*) FROM {db.name}.event"))[0][0] == 3


async def test_mariadb_with_a_server_certificate_of_another_ca_is_unavailable(
        mariadb: PrivateMariadb, my_db, started, caplog):
    caplog.set_level(logging.WARNING)
    db, user = my_db
    backend = await started(db.url(user=user), password=SECRET, ssl=True,
                            ssl_ca_file=str(mariadb.pki.other_ca), connect_timeout=3)
    assert VERIFY_FAILED in caplog.text and SECRET not in caplog.text
    with pytest.raises(Unavailable) as info:
        await backend.dump_batch(records(1))
    assert_refused_clearly(info.value, f"mysql://{user}@{HOST}:{mariadb.port}/{db.name}")
    assert backend.report()["connected"] is False


async def test_mariadb_with_a_certificate_not_for_the_urls_host_is_unavailable(
        mariadb: PrivateMariadb, my_db, started):
    db, user = my_db
    backend = await started(db.url(user=user, host=OTHER_HOST), password=SECRET, ssl=True,
                            ssl_ca_file=str(mariadb.pki.ca), connect_timeout=3)
    with pytest.raises(Unavailable) as info:
        await backend.dump_batch(records(1))
    assert_not_for_the_host(info.value)
    assert backend.report()["connected"] is False


async def test_mariadb_without_verification_connects_whatever_signed_the_server(
        mariadb: PrivateMariadb, my_db, started):
    db, user = my_db
    backend = await started(db.url(user=user), password=SECRET, ssl=True,
                            ssl_ca_file=str(mariadb.pki.other_ca), ssl_verify=False)
    await backend.dump_batch(records(2))
    assert await stored(backend) == 2
    assert await ssl_cipher(backend._store._writer)


async def test_mariadb_gets_the_client_certificate(mariadb: PrivateMariadb, my_db, started):
    db, user = my_db
    await mariadb.query(f"ALTER USER '{user}'@'{HOST}' REQUIRE SUBJECT '{CLIENT_DN}'")
    without = await started(db.url(user=user), password=SECRET, ssl=True,
                            ssl_ca_file=str(mariadb.pki.ca), connect_timeout=3)
    with pytest.raises(Unavailable, match="Access denied"):
        await without.dump_batch(records(1))
    backend = await started(db.url(user=user), password=SECRET, ssl=True,
                            ssl_ca_file=str(mariadb.pki.ca),
                            ssl_cert_file=str(mariadb.pki.client_cert),
                            ssl_key_file=str(mariadb.pki.client_key))
    await backend.dump_batch(records(1))
    assert await stored(backend) == 1
