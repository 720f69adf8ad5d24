"""The ``database`` dispatcher's ``url``: which store, where, and how to show it without secrets.

SQLAlchemy's URL syntax, so a Senlin ``[database] connection`` string can be pasted as it is:
``sqlite:///path``, ``postgresql[+driver]://user:pw@host:port/db``, ``mysql[+driver]://…`` and
``mariadb[+driver]://…``. The ``+driver`` suffix is accepted and does not choose the driver:
dispatchd always talks to PostgreSQL through asyncpg and to MySQL/MariaDB through asyncmy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

Dialect = Literal["sqlite", "postgresql", "mysql"]

# The drivers SQLAlchemy knows for each backend: a URL written for any of them is accepted.
DRIVERS: dict[str, tuple[Dialect, frozenset[str]]] = {
    "sqlite": ("sqlite", frozenset({"pysqlite", "aiosqlite", "pysqlcipher"})),
    "postgresql": ("postgresql", frozenset({"asyncpg", "psycopg", "psycopg2", "psycopg2cffi",
                                            "psycopg_async", "pg8000"})),
    "mysql": ("mysql", frozenset({"asyncmy", "aiomysql", "pymysql", "mysqldb", "mysqlconnector",
                                  "mariadbconnector", "cymysql"})),
}
DRIVERS["postgres"] = DRIVERS["postgresql"]
DRIVERS["mariadb"] = DRIVERS["mysql"]
DRIVER_USED = {"sqlite": "sqlite3", "postgresql": "asyncpg", "mysql": "asyncmy"}
DEFAULT_PORT = {"postgresql": 5432, "mysql": 3306}
# The one URL parameter taken: oslo.db's MySQL URLs carry it. TLS has options of its own.
QUERY_KEYS: dict[str, frozenset[str]] = {"mysql": frozenset({"charset"})}
MASK = "***"
EXAMPLES = ("sqlite:///var/events.db, postgresql://user:password@host:5432/database, "
            "mysql://user:password@host:3306/database (or mariadb://)")


@dataclass(frozen=True)
class StoreUrl:
    """A parsed ``url``; ``masked`` is the form that logs, status and errors may show."""

    dialect: Dialect
    masked: str
    host: str | None = None
    port: int | None = None
    database: str = ""
    username: str | None = None
    password: str | None = None
    charset: str = "utf8mb4"
    sqlite_path: Path | None = None

    @property
    def driver(self) -> str:
        return DRIVER_USED[self.dialect]

    def scrub(self, text: str) -> str:
        """``text`` with the password (as given, and percent-encoded) replaced by ``***``."""
        if self.password:
            for form in {self.password, quote(self.password, safe="")}:
                text = text.replace(form, MASK)
        return text


def parse(text: str, password: str | None = None) -> StoreUrl:
    """The store a url names; ``ValueError`` (whose message never holds the password) if none.

    ``password``, when given, is used as it is (no percent-encoding) and the url must have none.
    """
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        raise ValueError(f"url is not a database URL; use one of {EXAMPLES}") from None
    backend, _, driver = url.drivername.partition("+")
    if backend not in DRIVERS:
        raise ValueError(f"url scheme {backend!r} is not supported; use one of {EXAMPLES}")
    dialect, drivers = DRIVERS[backend]
    if driver and driver not in drivers:
        raise ValueError(f"url driver {driver!r} is unknown for {backend}; use one of "
                         f"{', '.join(sorted(drivers))} (dispatchd uses {DRIVER_USED[dialect]})")
    if dialect == "sqlite":
        return _sqlite(url)
    return _server(url, dialect, password)


def _sqlite(url: URL) -> StoreUrl:
    if not url.database or url.database == ":memory:" or url.host or url.query:
        raise ValueError("url must be sqlite:///relative/path or sqlite:////absolute/path")
    return StoreUrl("sqlite", url.render_as_string(), sqlite_path=Path(url.database))


def _server(url: URL, dialect: Dialect, password: str | None) -> StoreUrl:
    if not url.database:
        raise ValueError(f"url names no database: {dialect}://user@host:port/database")
    if password is not None and url.password is not None:
        raise ValueError("the password is given twice: in url and in password; keep one")
    unknown = set(url.query) - QUERY_KEYS.get(dialect, frozenset())
    if unknown:
        raise ValueError(f"url parameter(s) {', '.join(sorted(unknown))} not supported: TLS is "
                         "set with the ssl, ssl_ca_file, ssl_cert_file, ssl_key_file and "
                         "ssl_verify options")
    charset = url.query.get("charset", "utf8mb4")
    return StoreUrl(
        dialect, url.render_as_string(hide_password=True),
        host=url.host, port=url.port or DEFAULT_PORT[dialect], database=url.database,
        username=url.username, password=url.password if password is None else password,
        charset=charset if isinstance(charset, str) else charset[-1],
    )
