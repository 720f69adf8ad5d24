"""The database dispatcher on this machine's PostgreSQL and MariaDB, each test in a fresh database.

URL parsing and masking need no server; the rest run against the real servers (with CI=true they
never skip): Senlin's table created or accepted, idempotent multi-row upserts, the read path, and
outages (refused, unknown host, silent, cut mid-batch) as ``Unavailable`` with recovery.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from dispatchd import Unavailable
from dispatchd.config import parse
from dispatchd.dispatchers.database import DatabaseDispatcher, DatabaseOptions
from dispatchd.dispatchers.event_table import COLUMNS, EVENT, INDEXES
from dispatchd.dispatchers.store_url import parse as parse_url
from dispatchd.models import Record

from .support.amqp import TcpProxy
from .support.daemon import free_port
from .support.records import record
from .support.sql import DIALECTS, HOST, ServerDb, fresh_database, user_with_password

SECRET = "s3cr3t-Pa55/w@rd:x"  # URL-hostile on purpose: given through the password option
URL_SECRET = "UrlS3cretPw"


# -- urls: which are taken, and how they are shown ---------------------------------------------------


@pytest.mark.parametrize(("url", "dialect"), [
    ("sqlite:///var/events.db", "sqlite"),
    ("sqlite:////abs/events.db", "sqlite"),
    ("postgresql://u:p@db.example:5433/senlin", "postgresql"),
    ("postgresql+asyncpg://u@db/senlin", "postgresql"),
    ("postgresql+psycopg2://u@db/senlin", "postgresql"),
    ("postgres://u@db/senlin", "postgresql"),
    ("mysql://u:p@db/senlin", "mysql"),
    ("mysql+pymysql://u:p@db/senlin?charset=utf8", "mysql"),
    ("mysql+aiomysql://u:p@db/senlin", "mysql"),
    ("mysql+asyncmy://u:p@db/senlin", "mysql"),
    ("mariadb://u:p@db:3307/senlin", "mysql"),
    ("mariadb+mariadbconnector://u@db/senlin", "mysql"),
])
def test_urls_of_every_store_are_taken(url, dialect):
    assert parse_url(url).dialect == dialect
    assert DatabaseOptions(url=url).store_url.dialect == dialect


def test_a_server_url_gives_host_port_database_and_the_driver_dispatchd_uses():
    pg = parse_url("postgresql+psycopg2://senlin:pw@db.example/senlin")
    assert (pg.host, pg.port, pg.database, pg.username, pg.password, pg.driver) == (
        "db.example", 5432, "senlin", "senlin", "pw", "asyncpg")
    my = parse_url("mysql+pymysql://senlin:p%40ss@db.example:3307/senlin?charset=utf8")
    assert (my.port, my.password, my.charset, my.driver) == (3307, "p@ss", "utf8", "asyncmy")


@pytest.mark.parametrize(("url", "says"), [
    ("oracle://u@db/x", "scheme 'oracle' is not supported"),
    ("postgresql+odbc://u@db/x", "driver 'odbc' is unknown"),
    ("postgresql://u@db", "names no database"),
    ("mysql://x", "names no database"),
    ("postgresql://u@db/x?sslmode=require", "sslmode not supported: TLS is set with the ssl"),
    ("sqlite://", "sqlite:///relative/path"),
    ("not a url", "not a database URL"),
])
def test_bad_urls_are_refused_naming_why(url, says):
    with pytest.raises(ValidationError, match=says.replace("(", r"\(")):
        DatabaseOptions(url=url)


def test_the_password_is_masked_in_the_shown_url_the_repr_and_errors():
    url = f"postgresql://senlin:{URL_SECRET}@db/senlin"
    options = DatabaseOptions(url=url)
    assert options.safe_url == "postgresql://senlin:***@db/senlin"
    assert URL_SECRET not in repr(options) and URL_SECRET not in str(options)
    with pytest.raises(ValidationError) as info:
        DatabaseOptions(url=url + "?sslmode=require")
    assert URL_SECRET not in str(info.value)
    with pytest.raises(ValidationError) as info:
        DatabaseOptions(url=url, password=SECRET)
    assert "given twice" in str(info.value)
    assert URL_SECRET not in str(info.value) and SECRET not in str(info.value)
    assert parse_url(url).scrub(f"x {URL_SECRET} y") == "x *** y"


def test_a_password_from_the_environment_is_expanded_and_never_shown(monkeypatch):
    monkeypatch.setenv("DSP_TEST_DB_PASSWORD", SECRET)
    cfg = parse('[dispatchers.database]\nurl = "postgresql://senlin@db/senlin"\n'
                'password = "${DSP_TEST_DB_PASSWORD}"\n')
    options = DatabaseOptions.model_validate(cfg.dispatchers["database"])
    assert options.store_url.password == SECRET  # taken as it is: no percent-decoding
    assert SECRET not in repr(options) and SECRET not in options.safe_url


@pytest.mark.parametrize(("table", "says"), [
    ({"url": "sqlite:///x.db", "pool_size": 2}, "pool_size apply only to a PostgreSQL or MySQL"),
    ({"url": "sqlite:///x.db", "ssl": True}, "ssl apply only to a PostgreSQL or MySQL"),
    ({"url": "mysql://u@db/x", "ssl_ca_file": "ca.pem"}, "ssl_ca_file apply only with ssl = true"),
    ({"url": "mysql://u@db/x", "ssl": True, "ssl_key_file": "k.pem"}, "needs ssl_cert_file"),
    ({"url": "mysql://u@db/x", "pool_size": 0}, "greater than 0"),
])
def test_options_that_do_not_fit_the_store_are_refused(table, says):
    with pytest.raises(ValidationError, match=says):
        DatabaseOptions(**table)


def test_the_dialect_is_known_before_start():
    assert DatabaseDispatcher("d", DatabaseOptions(url="sqlite:///x.db")).dialect.name == "sqlite"
    assert DatabaseDispatcher("d", DatabaseOptions(url="postgresql://u@h/d")).dialect.name == \
        "postgresql"
    assert DatabaseDispatcher("d", DatabaseOptions(url="mariadb://u@h/d")).dialect.name == "mysql"


# -- on the servers ----------------------------------------------------------------------------------


@pytest.fixture(params=DIALECTS)
async def server_db(request):
    async with fresh_database(request.param) as db:
        yield db


def records(n: int, **overrides) -> list[Record]:
    return [Record.model_validate(record(**overrides)) for _ in range(n)]


async def columns(db: ServerDb) -> dict[str, tuple[str, str, int | None]]:
    """The event table's columns: data type, nullable, character length, from the server."""
    schema = "current_schema()" if db.dialect == "postgresql" else "DATABASE()"
    rows = await db.query(
        "SELECT column_name, data_type, is_nullable, character_maximum_length FROM "
        f"information_schema.columns WHERE table_schema = {schema} AND table_name = 'event'")
    return {name: (kind.lower(), nullable, length) for name, kind, nullable, length in rows}


async def indexes(db: ServerDb) -> set[str]:
    if db.dialect == "postgresql":
        rows = await db.query("SELECT indexname FROM pg_indexes WHERE tablename = 'event'")
    else:
        rows = await db.query("SELECT DISTINCT index_name FROM information_schema.statistics"
                              " WHERE table_schema = DATABASE() AND table_name = 'event'")
    return {row[0] for row in rows}


async def test_senlins_table_is_created_with_dispatchds_indexes(server_db, started):
    backend = await started(server_db.url())
    assert backend.report()["event_table"] == "created by dispatchd"
    cols = await columns(server_db)
    assert set(cols) == set(COLUMNS)
    timestamp = "timestamp without time zone" if server_db.dialect == "postgresql" else "datetime"
    assert cols["id"] == ("character varying" if server_db.dialect == "postgresql" else "varchar",
                          "NO", 36)
    assert cols["timestamp"][:2] == (timestamp, "NO")
    assert cols["level"][2] == 63 and cols["user"][2] == 64
    assert cols["meta_data"][0] == ("text" if server_db.dialect == "postgresql" else "longtext")
    assert {index.name for index in INDEXES["other"]} <= await indexes(server_db)


# Senlin's event table as its migrations leave it (first version, then the column renames and
# the longer user and project), on each server; no index of dispatchd's.
SENLINS_TABLE = {
    "postgresql": """CREATE TABLE event (id VARCHAR(36) NOT NULL, timestamp TIMESTAMP WITHOUT TIME
        ZONE NOT NULL, oid VARCHAR(36), oname VARCHAR(255), otype VARCHAR(36),
        cluster_id VARCHAR(36), level VARCHAR(63), "user" VARCHAR(64), project VARCHAR(64),
        action VARCHAR(36), status VARCHAR(255), status_reason TEXT, meta_data TEXT,
        PRIMARY KEY (id))""",
    "mysql": """CREATE TABLE event (id VARCHAR(36) NOT NULL, timestamp DATETIME NOT NULL,
        oid VARCHAR(36), oname VARCHAR(255), otype VARCHAR(36), cluster_id VARCHAR(36),
        level VARCHAR(63), user VARCHAR(64), project VARCHAR(64), action VARCHAR(36),
        status VARCHAR(255), status_reason TEXT, meta_data LONGTEXT, PRIMARY KEY (id))
        ENGINE=InnoDB CHARSET=utf8""",
}


async def test_an_existing_senlin_table_is_written_as_it_is(server_db, started):
    await server_db.execute(SENLINS_TABLE[server_db.dialect])
    before = (await columns(server_db), await indexes(server_db))
    backend = await started(server_db.url())
    assert backend.report()["event_table"] == "existing (written as it is)"
    await backend.dump_batch(records(3))
    assert (await columns(server_db), await indexes(server_db)) == before  # no DDL at all
    assert (await server_db.query("SELECT count(*) FROM event"))[0][0] == 3


async def test_a_table_that_is_not_senlins_fails_start_naming_what_is_missing(server_db, started):
    await server_db.execute("CREATE TABLE event (id VARCHAR(36) PRIMARY KEY, obj_id VARCHAR(36))")
    with pytest.raises(RuntimeError, match="lacks column.*timestamp.*oid"):
        await started(server_db.url())


async def test_upserts_are_idempotent_and_store_what_senlin_stores(server_db, started):
    backend = await started(server_db.url())
    when = "2026-11-28T07:00:00.654321+01:00"
    first = records(3, timestamp=when, level="WARNING", extra={"count": 2, "note": "é"})
    again = Record.model_validate({**record(timestamp=when), "id": first[0].id, "reason": "again"})
    await backend.dump_batch(first + [first[1]])  # the same id twice in one batch
    await backend.dump_batch([again, first[2]])  # and again in the next: at-least-once
    rows = await server_db.query(
        "SELECT id, timestamp, level, meta_data, status_reason, otype FROM event ORDER BY id")
    assert sorted(row[0] for row in rows) == sorted(r.id for r in first)
    by_id = {row[0]: row for row in rows}
    _, ts, level, meta, _, otype = by_id[first[1].id]
    # Naive UTC; Senlin's DATETIME on MySQL/MariaDB has no fraction: the server drops it there.
    micro = 654321 if server_db.dialect == "postgresql" else 0
    assert ts == datetime(2026, 11, 28, 6, 0, 0, micro)
    assert (level, json.loads(meta), otype) == ("30", {"count": 2, "note": "é"}, "CLUSTER")
    assert by_id[first[0].id][4] == "again"  # the last delivery wins, as on SQLite
    assert by_id[first[0].id][2] == "20"


async def test_a_batch_of_1000_is_one_transaction_of_multi_row_statements(server_db, started):
    backend = await started(server_db.url())
    batch = records(1000)
    store = backend._store
    if server_db.dialect == "mysql":
        async with store._writer.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SHOW SESSION STATUS WHERE variable_name IN"
                              " ('Com_insert', 'Com_commit')")
            before = dict(await cur.fetchall())
    await backend.dump_batch(batch)
    assert (await server_db.query("SELECT count(*) FROM event"))[0][0] == 1000
    if server_db.dialect == "postgresql":
        # One statement is one transaction: every row carries the same creating transaction id.
        assert len(await server_db.query("SELECT DISTINCT xmin::text FROM event")) == 1
    else:
        async with store._writer.acquire() as conn, conn.cursor() as cur:  # pool of one: the same
            await cur.execute("SHOW SESSION STATUS WHERE variable_name IN"
                              " ('Com_insert', 'Com_commit')")
            after = dict(await cur.fetchall())
        assert int(after["Com_insert"]) - int(before["Com_insert"]) == 1  # one INSERT, 1000 rows
        assert int(after["Com_commit"]) - int(before["Com_commit"]) == 1


async def test_a_failed_batch_stores_nothing(server_db, started):
    backend = await started(server_db.url())
    good = records(2)
    bad = Record.model_validate(record(action={**record()["action"], "action": "X" * 40}))
    with pytest.raises(Exception) as info:  # action is VARCHAR(36): the server refuses
        await backend.dump_batch([*good, bad])
    assert not isinstance(info.value, Unavailable)  # a refusal spends an attempt, an outage not
    assert (await server_db.query("SELECT count(*) FROM event"))[0][0] == 0
    await backend.dump_batch(good)  # the connection is still good for the next batch
    assert (await server_db.query("SELECT count(*) FROM event"))[0][0] == 2


async def test_fetch_reads_rows_on_its_own_connection(server_db, started):
    backend = await started(server_db.url())
    batch = records(5, level="ERROR") + records(5, level="INFO")
    await backend.dump_batch(batch)
    statement = (select(EVENT).where(EVENT.c.level.in_(["40", "50"]), EVENT.c.oname.like("we%"))
                 .order_by(EVENT.c.timestamp, EVENT.c.id).limit(3))
    rows = await backend.fetch(statement)
    assert len(rows) == 3 and list(rows[0]) == list(COLUMNS)
    assert {row["level"] for row in rows} == {"40"}
    assert isinstance(rows[0]["timestamp"], datetime) and rows[0]["timestamp"].tzinfo is None
    count = await backend.fetch(select(func.count().label("n")).select_from(EVENT))
    assert count == [{"n": 10}]
    # A value that would break SQL spliced into it is a parameter: it matches nothing.
    assert await backend.fetch(select(EVENT.c.id).where(EVENT.c.oname == "x' OR '1'='1")) == []
    assert backend.report()["connects"] == 2  # the writer's pool and the readers'


async def test_queries_never_use_the_writers_connection_and_wait_for_a_free_reader(
        server_db, started):
    backend = await started(server_db.url(), read_pool_size=1, command_timeout=5)
    await backend.dump_batch(records(3))
    session = func.pg_backend_pid if server_db.dialect == "postgresql" else func.connection_id
    async with backend._store._writer.acquire() as conn:  # a pool of one: the writer's only
        if server_db.dialect == "postgresql":
            writer = await conn.fetchval("SELECT pg_backend_pid()")
        else:
            async with conn.cursor() as cur:
                await cur.execute("SELECT connection_id()")
                writer = (await cur.fetchone())[0]
    answers = await asyncio.gather(*(backend.fetch(select(session().label("s"))) for _ in range(8)))
    readers = {rows[0]["s"] for rows in answers}
    assert len(readers) == 1 and writer not in readers  # eight queries, one reader, in turn
    assert backend.report()["outages"] == 0


async def test_fetch_on_sqlite_reads_through_a_read_only_connection(tmp_path, started):
    backend = await started(f"sqlite:///{tmp_path}/ev.db")
    batch = records(4)
    await backend.dump_batch(batch)
    since = datetime(2000, 1, 1)
    rows = await backend.fetch(select(EVENT.c.id, EVENT.c.timestamp)
                               .where(EVENT.c.timestamp > since).order_by(EVENT.c.id))
    assert [row["id"] for row in rows] == sorted(r.id for r in batch)
    assert all(isinstance(row["timestamp"], datetime) for row in rows)
    reader = backend._store._reader
    with pytest.raises(Exception, match="readonly"):
        await reader.run(lambda db: db.execute("DELETE FROM event"))


async def test_fetch_before_start_is_unavailable():
    backend = DatabaseDispatcher("d", DatabaseOptions(url="postgresql://u@127.0.0.1/x"))
    with pytest.raises(Unavailable, match="not started"):
        await backend.fetch(select(EVENT))


# -- credentials -------------------------------------------------------------------------------------


async def test_a_password_login_works_and_the_password_is_never_shown(server_db, started):
    async with user_with_password(server_db, SECRET.replace("'", "")) as user:
        backend = await started(server_db.url(user=user), password=SECRET.replace("'", ""))
        await backend.dump_batch(records(2))
        assert SECRET not in json.dumps(backend.report())
        assert (await server_db.query("SELECT count(*) FROM event"))[0][0] == 2


async def test_a_refused_login_is_an_outage_that_does_not_show_the_password(started):
    async with fresh_database("mysql") as db:  # trust auth on PostgreSQL takes any password
        async with user_with_password(db, "right-one") as user:
            backend = await started(db.url(user=user), password=SECRET)
            with pytest.raises(Unavailable) as info:
                await backend.dump_batch(records(1))
    assert "Access denied" in str(info.value) and SECRET not in str(info.value)
    assert SECRET not in json.dumps(backend.report())


# -- outages -----------------------------------------------------------------------------------------


async def test_a_refused_connection_at_start_is_not_fatal_and_batches_are_unavailable(
        server_db, started, caplog):
    port = free_port()  # nothing listens there
    url = server_db.url(port=port, password=URL_SECRET)
    backend = await started(url, connect_timeout=2)  # does not raise
    assert backend.report()["connected"] is False
    with pytest.raises(Unavailable, match="cannot reach") as info:
        await backend.dump_batch(records(1))
    assert URL_SECRET not in str(info.value)
    assert URL_SECRET not in json.dumps(backend.report())
    assert URL_SECRET not in caplog.text and "will retry" in caplog.text


async def test_an_unknown_host_is_unavailable(started):
    backend = await started("postgresql://u@no-such-host.invalid/x", connect_timeout=5)
    with pytest.raises(Unavailable, match="cannot reach"):
        await backend.dump_batch(records(1))


@pytest.fixture
async def proxy():
    proxies: list[TcpProxy] = []

    async def make(db: ServerDb) -> TcpProxy:
        p = TcpProxy(target=(HOST, db.port))
        await p.start()
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        await p.close()


async def test_a_server_gone_mid_batch_is_unavailable_then_the_store_reconnects(
        server_db, started, proxy):
    p = await proxy(server_db)
    backend = await started(server_db.url(port=p.port), connect_timeout=2, command_timeout=2)
    await backend.dump_batch(records(10))
    p.flowing.clear()  # the next batch goes out and nothing comes back...
    batch = records(500)
    write = asyncio.create_task(backend.dump_batch(batch))
    await asyncio.sleep(0.3)
    await p.cut()  # ...then the server is gone
    with pytest.raises(Unavailable):
        await write
    with pytest.raises(Unavailable):  # still down: refused
        await backend.dump_batch(batch)
    p.flowing.set()
    await p.restore()
    await backend.dump_batch(batch)  # the same records again, on a new connection
    assert (await server_db.query("SELECT count(*) FROM event"))[0][0] == 510
    assert backend.report()["outages"] >= 2 and backend.report()["connected"] is True
    rows = await backend.fetch(select(func.count().label("n")).select_from(EVENT))
    assert rows == [{"n": 510}]


async def test_a_silent_server_is_unavailable_after_command_timeout(server_db, started, proxy):
    p = await proxy(server_db)
    backend = await started(server_db.url(port=p.port), command_timeout=0.5, connect_timeout=1)
    p.flowing.clear()
    started_at = asyncio.get_running_loop().time()
    with pytest.raises(Unavailable, match="no answer in time"):
        await backend.dump_batch(records(5))
    assert asyncio.get_running_loop().time() - started_at < 3
    with pytest.raises(Unavailable):
        await backend.fetch(select(EVENT))
    p.flowing.set()
    await backend.dump_batch(records(5))
    assert (await server_db.query("SELECT count(*) FROM event"))[0][0] == 5


async def test_tls_is_required_when_asked_never_fallen_back_from(server_db, started):
    # Neither server here offers TLS: asked for, it must fail rather than go on in plain text.
    backend = await started(server_db.url(), ssl=True, ssl_verify=False, connect_timeout=3)
    # PostgreSQL refuses the upgrade; MariaDB answers asyncmy's TLS hello in plain text.
    with pytest.raises(Unavailable, match="rejected SSL upgrade|it does not offer TLS"):
        await backend.dump_batch(records(1))
    assert await columns(server_db) == {}  # nothing was written, not even the table
