"""Queries over Senlin's ``event`` table: parse ``GET /v1/events`` parameters, build the selects
for any dialect, and shape rows as Senlin's API shows events.

Pages are keyset pages: the marker row's sort-key values bound the next page, so rows inserted
while a client pages through neither repeat nor push rows it has not seen yet out of reach.
NULLs sort as the smallest value on every dialect (PostgreSQL is told so explicitly).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    DateTime,
    MetaData,
    String,
    Table,
    Text,
    and_,
    false,
    or_,
    select,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Select

from .constants import (
    EVENT_DEFAULT_SORT,
    EVENT_FILTERS,
    EVENT_LIMIT,
    EVENT_MAX_LENGTH,
    EVENT_MAX_LIMIT,
    EVENT_MAX_VALUES,
    EVENT_SORT_KEYS,
    LEVELS,
    SHORT_ID,
)
from .errors import AmbiguousEventId, EventNotFound, InvalidQuery, StoreUnavailable, Unavailable
from .event_store import EventStore
from .models import parse_level
from .timefmt import rfc3339

# The columns the API reads, typed as Senlin's migrations make them (the DateTime type binds a
# datetime as each dialect stores it). A test keeps it equal to the dispatcher's definition.
EVENT = Table(
    "event", MetaData(),
    Column("id", String(36), primary_key=True),
    Column("timestamp", DateTime, nullable=False),
    *(Column(name, String(255)) for name in ("oid", "oname", "otype", "cluster_id", "level",
                                             "user", "project", "action", "status")),
    Column("status_reason", Text),
    Column("meta_data", Text),
)
NOT_NULL = frozenset({"id", "timestamp"})
SINGLE = ("sort", "limit", "marker", "since", "until")
LEVEL_NAMES = {number: name for name, number in LEVELS.items() if name != "WARN"}
ID_CHARS = re.compile(r"[0-9a-f-]+")  # fullmatch: "$" would let a trailing newline in
HEX = "0123456789abcdef"

SortKey = tuple[str, bool]  # (column, descending)


@dataclass(frozen=True)
class EventQuery:
    """A validated ``GET /v1/events``: each filter's accepted values, times, order and page."""

    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    since: datetime | None = None  # naive UTC, as Senlin stores times
    until: datetime | None = None
    sort: tuple[SortKey, ...] = (("timestamp", True),)
    limit: int = EVENT_LIMIT
    marker: str | None = None

    @property
    def order(self) -> tuple[SortKey, ...]:
        """The sort keys, then ``id`` ascending to break ties, as Senlin's ``get_sort_params``."""
        return (*self.sort, ("id", False))


# -- parameters -----------------------------------------------------------------------------------


def parse_query(params: Iterable[tuple[str, str]]) -> EventQuery:
    """The query for these (name, value) pairs; ``InvalidQuery`` names the first bad one."""
    values: dict[str, list[str]] = {}
    for name, value in params:
        if name not in EVENT_FILTERS and name not in SINGLE:
            known = ", ".join((*EVENT_FILTERS, *SINGLE))
            raise InvalidQuery(name, f"unknown parameter; the parameters are {known}")
        values.setdefault(name, []).append(value)
    single: dict[str, str] = {}
    for name in SINGLE:
        given = values.pop(name, [])
        if len(given) > 1:
            raise InvalidQuery(name, "given more than once")
        if given:
            single[name] = given[0]
    filters = {name: _filter_values(name, given) for name, given in values.items()}
    since, until = _time(single, "since"), _time(single, "until")
    if since is not None and until is not None and until <= since:
        raise InvalidQuery("until", "must be later than since")
    return EventQuery(
        filters=filters, since=since, until=until,
        sort=parse_sort(single.get("sort", EVENT_DEFAULT_SORT)),
        limit=_limit(single.get("limit")), marker=_marker(single.get("marker")),
    )


def _filter_values(name: str, given: list[str]) -> tuple[str, ...]:
    if len(given) > EVENT_MAX_VALUES:
        raise InvalidQuery(name, f"at most {EVENT_MAX_VALUES} values")
    if any(len(value) > EVENT_MAX_LENGTH for value in given):
        raise InvalidQuery(name, f"a value has more than {EVENT_MAX_LENGTH} characters")
    if name != "level":
        return tuple(dict.fromkeys(given))
    levels: list[str] = []
    for value in given:
        try:
            number = parse_level(int(value) if value.isascii() and value.isdigit() else value)
        except ValueError as exc:
            raise InvalidQuery("level", str(exc)) from None
        levels.append(str(number))  # stored as Senlin binds it: '20'
    return tuple(dict.fromkeys(levels))


def parse_sort(text: str) -> tuple[SortKey, ...]:
    """``key[:asc|desc],…`` over Senlin's event sort keys; each key at most once."""
    keys: list[SortKey] = []
    for part in text.split(","):
        key, _, direction = part.partition(":")
        if key not in EVENT_SORT_KEYS:
            raise InvalidQuery("sort", f"unknown sort key {key!r}; the keys are "
                                       f"{', '.join(EVENT_SORT_KEYS)}")
        if direction not in ("", "asc", "desc"):
            raise InvalidQuery("sort", f"direction {direction!r} of {key}: use asc or desc")
        if any(key == seen for seen, _ in keys):
            raise InvalidQuery("sort", f"{key} given more than once")
        keys.append((key, direction == "desc"))
    return tuple(keys)


def _limit(raw: str | None) -> int:
    if raw is None:
        return EVENT_LIMIT
    value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 8 else 0
    if not 1 <= value <= EVENT_MAX_LIMIT:
        raise InvalidQuery("limit", f"must be an integer 1..{EVENT_MAX_LIMIT}, got {raw!r}")
    return value


def _marker(raw: str | None) -> str | None:
    if raw is not None and not (len(raw) <= 36 and ID_CHARS.fullmatch(raw)):
        raise InvalidQuery("marker", "must be the id of an event (a uuid)")
    return raw


def _time(single: dict[str, str], name: str) -> datetime | None:
    """An RFC 3339 time (a time without offset is UTC) as naive UTC."""
    raw = single.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.strip())
        return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    except (ValueError, OverflowError):
        raise InvalidQuery(name, f"must be an RFC 3339 time such as 2026-12-01T06:00:00Z, "
                                 f"got {raw!r}") from None


# -- statements -----------------------------------------------------------------------------------


def page_statement(query: EventQuery, dialect: Dialect,
                   after: dict[str, Any] | None = None) -> Select[Any]:
    """One page in the query's order, starting after the row ``after`` (the marker's values)."""
    stmt = select(EVENT).where(*_conditions(query))
    if after is not None:
        stmt = stmt.where(_after(query.order, after))
    return stmt.order_by(*_order(query.order, dialect)).limit(query.limit)


def id_statement(ident: str) -> Select[Any]:
    """The row with this id: an event to show, or a marker whose sort-key values bound a page."""
    return select(EVENT).where(EVENT.c.id == ident)


def prefix_statement(prefix: str, dialect: Dialect) -> Select[Any]:
    """Up to two rows whose id starts with ``prefix`` (two: the prefix is ambiguous)."""
    condition = EVENT.c.id.startswith(prefix)  # safe unescaped: ids are checked to [0-9a-f-]
    # The same match as a range on the primary key, which every planner can use: PostgreSQL
    # turns LIKE into a range only under the "C" collation, SQLite only with case_sensitive_like.
    # LIKE stays, as the exact test; the range only has to hold every match.
    low, high = id_range(prefix)
    if low:
        condition = and_(EVENT.c.id >= low, condition)
    if high:
        condition = and_(EVENT.c.id < high, condition)
    return select(EVENT).where(condition).order_by(EVENT.c.id).limit(2)


def id_range(prefix: str) -> tuple[str, str]:
    """Bounds ``[low, high)`` holding every id that starts with ``prefix`` ("": unbounded).

    Only the leading hex digits bound it: digits and a-f sort as in ASCII in every collation,
    while a locale collation (en_US) skips a uuid's '-' at first, so a bound with one would not.
    """
    head = prefix.split("-", 1)[0]
    carried = head.rstrip("f")  # "12ff" ends below "13"; "ffff" has no upper bound
    high = carried[:-1] + HEX[HEX.index(carried[-1]) + 1] if carried else ""
    return head, high


def _conditions(query: EventQuery) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = []
    for name, values in query.filters.items():
        column = EVENT.c[name]
        found.append(column == values[0] if len(values) == 1 else column.in_(values))
    if query.since is not None:
        found.append(EVENT.c.timestamp >= query.since)
    if query.until is not None:
        found.append(EVENT.c.timestamp < query.until)
    return found


def _order(keys: tuple[SortKey, ...], dialect: Dialect) -> list[ColumnElement[Any]]:
    nulls_last_by_default = dialect.name == "postgresql"
    order: list[ColumnElement[Any]] = []
    for name, desc in keys:
        column = EVENT.c[name]
        term = column.desc() if desc else column.asc()
        if nulls_last_by_default and name not in NOT_NULL:
            term = term.nulls_last() if desc else term.nulls_first()
        order.append(term)
    return order


def _after(keys: tuple[SortKey, ...], row: dict[str, Any]) -> ColumnElement[bool]:
    """Rows strictly after ``row`` in this order: (k1 beyond) or (k1 equal and k2 beyond) or …"""
    alternatives: list[ColumnElement[bool]] = []
    equal: list[ColumnElement[bool]] = []
    for name, desc in keys:
        column, value = EVENT.c[name], row[name]
        alternatives.append(and_(*equal, _beyond(name, value, desc)))
        equal.append(column.is_(None) if value is None else column == value)
    condition = or_(*alternatives)
    first, desc = keys[0]
    if first in NOT_NULL:
        # A plain range on the leading key too, which every planner turns into an index range.
        bound = EVENT.c[first] <= row[first] if desc else EVENT.c[first] >= row[first]
        condition = and_(bound, condition)
    return condition


def _beyond(name: str, value: Any, desc: bool) -> ColumnElement[bool]:
    column = EVENT.c[name]
    if not desc:
        return column.is_not(None) if value is None else column > value
    if value is None:
        return false()  # nothing sorts below NULL
    return column < value if name in NOT_NULL else or_(column < value, column.is_(None))


# -- running them -------------------------------------------------------------------------------


async def list_events(store: EventStore, query: EventQuery) -> list[dict[str, Any]]:
    """One page of events, as Senlin's API shows them."""
    after = None
    if query.marker is not None:
        found = await _fetch(store, id_statement(query.marker))
        if not found:
            raise InvalidQuery("marker", f"no event has id {query.marker!r}")
        after = found[0]
    rows = await _fetch(store, page_statement(query, store.dialect, after))
    return [senlin_event(row) for row in rows]


async def get_event(store: EventStore, ident: str) -> dict[str, Any]:
    """The event with this id, or the one whose id starts with this prefix (8+ characters)."""
    key = ident.lower()
    if not ID_CHARS.fullmatch(key) or len(key) > 36:
        raise InvalidQuery("id", "an event id has only hexadecimal digits and '-', at most 36")
    if len(key) < SHORT_ID:
        raise InvalidQuery("id", f"give the full id or at least its first {SHORT_ID} characters")
    rows = await _fetch(store, id_statement(key))
    if not rows and len(key) < 36:
        rows = await _fetch(store, prefix_statement(key, store.dialect))
        if len(rows) > 1:
            raise AmbiguousEventId(f"more than one event id starts with {key!r}; give more of it")
    if not rows:
        raise EventNotFound(f"no event has the id {key!r}" if len(key) == 36 else
                            f"no event id starts with {key!r}")
    return senlin_event(rows[0])


async def _fetch(store: EventStore, statement: Select[Any]) -> list[dict[str, Any]]:
    try:
        return await store.fetch(statement)
    except Unavailable as exc:
        raise StoreUnavailable(f"the event store cannot be read now: {exc}") from None


# -- rows as Senlin shows them ------------------------------------------------------------------


def senlin_event(row: dict[str, Any]) -> dict[str, Any]:
    """Senlin's event fields: the level by name, times in RFC 3339, meta_data an object."""
    return {
        "id": row["id"], "timestamp": _timestamp(row["timestamp"]),
        **{name: row[name] for name in ("oid", "oname", "otype", "cluster_id")},
        "level": _level(row["level"]),
        **{name: row[name] for name in ("user", "project", "action", "status", "status_reason")},
        "meta_data": _meta_data(row["meta_data"]),
    }


def _timestamp(value: Any) -> str:
    if isinstance(value, str):  # a store that hands back the text SQLite keeps
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return rfc3339(value if value.tzinfo else value.replace(tzinfo=UTC))
    return str(value)


def _level(value: Any) -> str | None:
    """``'20'`` → ``INFO``; a level without a name (``'25'``) as stored."""
    try:
        return LEVEL_NAMES.get(int(value), str(value))
    except (TypeError, ValueError):
        return None if value is None else str(value)


def _meta_data(value: Any) -> Any:
    if value is None or value == "":
        return {}
    if not isinstance(value, str | bytes):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value  # not JSON: shown as it is stored rather than hidden
