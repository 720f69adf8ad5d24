"""Senlin's ``event`` table, as Senlin's migrations leave it, and its rows as Senlin writes them.

The table is SQLAlchemy Core, so each dialect gets Senlin's DDL and Senlin's value encoding
(``DATETIME`` text on SQLite, ``LONGTEXT`` for ``meta_data`` on MySQL) from the same definition.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, Text
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from dispatchd import Derived, Record

METADATA = MetaData()
EVENT = Table(
    "event", METADATA,
    Column("id", String(36), primary_key=True, nullable=False),
    Column("timestamp", DateTime, nullable=False),
    Column("oid", String(36)),
    Column("oname", String(255)),
    Column("otype", String(36)),
    Column("cluster_id", String(36)),
    Column("level", String(63)),
    Column("user", String(64)),
    Column("project", String(64)),
    Column("action", String(36)),
    Column("status", String(255)),
    Column("status_reason", Text),
    Column("meta_data", Text().with_variant(mysql.LONGTEXT(), "mysql")),
    mysql_engine="InnoDB",
    mysql_charset="utf8",
)
COLUMNS = tuple(column.name for column in EVENT.columns)

# dispatchd's own, for its queries by time, entity and cluster: only on a table dispatchd made.
# The query API's default order is newest first, ties broken by id ascending, so an entity's or a
# cluster's first page is an index range in that order. ``level`` comes after the time, so a
# level filter is checked on the index entries and only matching rows are fetched: with level
# only in the row, a cluster's ERROR events (5 %) cost MariaDB 2,000 row fetches (p99 150 ms on
# 1M rows; 16 ms with it; bench/query.py). InnoDB ends every index with the primary key, so
# there the id goes before the level: after it, ties would be in level order and every query a
# sort of the matching rows. SQLite and PostgreSQL sort ties by id in a small step of their own,
# and the id in their indexes cost 11 % of SQLite's bare insert rate (37 bytes an entry).
# Both variants attach to EVENT (SQLAlchemy's way): tables are made with ``ddl``, never with
# ``create_all``, which would try both.
def _indexes(innodb: bool) -> tuple[Index, ...]:
    tail = (EVENT.c.id, EVENT.c.level) if innodb else (EVENT.c.level,)
    return (
        BY_TIME,
        Index("ix_event_oid_timestamp", EVENT.c.oid, EVENT.c.timestamp.desc(), *tail),
        Index("ix_event_cluster_id_timestamp", EVENT.c.cluster_id, EVENT.c.timestamp.desc(),
              *tail),
    )


BY_TIME = Index("ix_event_timestamp", EVENT.c.timestamp.desc())
INDEXES = {"mysql": _indexes(innodb=True), "other": _indexes(innodb=False)}


def indexes(dialect: Dialect) -> tuple[Index, ...]:
    """dispatchd's indexes as ``dialect`` gets them."""
    return INDEXES["mysql" if dialect.name == "mysql" else "other"]


Row = tuple[Any, ...]


def ddl(dialect: Dialect) -> list[str]:
    """``CREATE TABLE event`` and dispatchd's indexes, in the dialect's SQL."""
    return [str(CreateTable(EVENT).compile(dialect=dialect)).strip()] + [
        str(CreateIndex(index).compile(dialect=dialect)) for index in indexes(dialect)
    ]


def sqlite_upsert() -> str:
    """SQLite's insert-or-update on ``id``, with ``?`` parameters in COLUMNS order."""
    insert = sqlite.insert(EVENT)
    stmt = insert.on_conflict_do_update(
        index_elements=[EVENT.c.id],
        set_={name: insert.excluded[name] for name in COLUMNS if name != "id"},
    )
    compiled = stmt.compile(dialect=sqlite.dialect(), column_keys=list(COLUMNS))
    assert tuple(compiled.positiontup or ()) == COLUMNS  # the rows are built in this order
    return str(compiled)


class SchemaError(RuntimeError):
    """The ``event`` table exists and is not Senlin's: a start error, never an outage."""


def check_columns(present: set[str]) -> None:
    """``SchemaError`` naming the columns an existing ``event`` table lacks, if any."""
    if missing := [name for name in COLUMNS if name not in present]:
        raise SchemaError(
            f"the existing event table lacks column(s) {', '.join(missing)}: it is not "
            "Senlin's (run Senlin's migrations, or point url at another database)"
        )


def creation_ddl(present: set[str], dialect: Dialect) -> list[str]:
    """What a server store runs to have a table Senlin can read, given the columns an existing
    ``event`` table has (``present``): nothing for Senlin's (``SchemaError`` for another), else
    ``ddl(dialect)``."""
    if present:
        check_columns(present)
        return []
    return ddl(dialect)


def table_state(created: bool) -> str:
    """What status says of the ``event`` table a store opened."""
    return "created by dispatchd" if created else "existing (written as it is)"


SAMPLES = (datetime(2026, 12, 1, 6, 0, 0, 123456), datetime(5, 1, 2, 3, 4, 5), datetime.max)


def _datetime_encoder(dialect: Dialect) -> Callable[[datetime], Any]:
    """SQLAlchemy's encoding of a naive DATETIME for the dialect; its own processor costs 1.4 us
    a row, so where ``isoformat`` gives the same text (SQLite) that is used instead."""
    processor = EVENT.c.timestamp.type.dialect_impl(dialect).bind_processor(dialect)
    if processor is None:
        return lambda value: value  # the driver takes datetime objects

    same = all(processor(sample) == _iso(sample) for sample in SAMPLES)
    return _iso if same else processor


def _iso(value: datetime) -> str:
    return value.isoformat(sep=" ", timespec="microseconds")


def _meta_data_encoder() -> Callable[[Any], str]:
    """``json.dumps`` (Senlin's ``jsonutils.dumps`` for what a record can hold), without building
    an encoder per call: 1 us instead of 3 for a small dict."""
    plain = json.JSONEncoder()
    if c_make_encoder is None:  # no C accelerator: json.dumps it is
        return plain.encode
    # No circular check: a record's data came from JSON (or was validated as such), so it has
    # no cycles, and markers left behind by a failed call could not wrongly reject the next one.
    encoder = c_make_encoder(None, plain.default, encode_basestring_ascii, None, ": ", ", ",
                             False, False, True)
    return lambda value: "".join(encoder(value, 0))


def row_encoder(dialect: Dialect) -> Callable[[Record], Row]:
    """A function from a record to the values Senlin's ``DBEvent.dump`` binds, in COLUMNS order."""
    to_datetime = _datetime_encoder(dialect)
    as_text = to_datetime is _iso
    meta_data = _meta_data_encoder()

    def row_of(record: Record) -> Row:
        d = Derived.of(record)
        # Senlin stores naive UTC (oslo's utcnow); an aware time in another zone is converted.
        ts = record.timestamp
        if ts.utcoffset():
            ts = ts.astimezone(UTC)
        # The aware time's text less its "+00:00" is the naive time's: one call fewer.
        when = ts.isoformat(" ", "microseconds") if as_text else ""
        if when.endswith("+00:00"):
            when = when[:-6]
        else:
            when = to_datetime(ts.replace(tzinfo=None))
        return (
            record.id, when, d.oid, d.oname, d.otype, d.cluster_id,
            str(record.level),  # Senlin binds the int to VARCHAR(63): '20'
            d.user, d.project, d.action, d.status, d.status_reason,
            # Senlin's Dict type: jsonutils.dumps, so '{}' when empty (most events: skip the call)
            meta_data(d.meta_data) if d.meta_data else "{}",
        )

    return row_of
