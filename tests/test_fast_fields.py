"""The record's hot fields check in pydantic-core what Python validators used to: hypothesis
shows the models accept and reject exactly what the Python validators did, with the same values
and the same error locations (issue 13).

The reference models below are the record's models as they were, with the Python validators on
``level``, ``id``, every timestamp and the entity's kind check.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    ValidationError,
    model_validator,
)

from dispatchd.constants import LEVELS
from dispatchd.models import (
    CLUSTER_ONLY,
    NODE_ONLY,
    Action,
    Entity,
    Record,
    _canonical_uuid,
    _has_utc,
    _now,
    new_id,
    parse_level,
)

EXAMPLES = settings(max_examples=int(os.environ.get("DISPATCHD_FIELD_EXAMPLES", "300")),
                    deadline=None, database=None, print_blob=True)

OldTimestamp = Annotated[AwareDatetime, AfterValidator(_has_utc)]


class OldEntity(Entity):
    init_at: OldTimestamp | None = None
    created_at: OldTimestamp | None = None
    updated_at: OldTimestamp | None = None

    @model_validator(mode="after")
    def _kind_fits(self) -> OldEntity:  # the check as it was written first
        wrong = NODE_ONLY if self.type.upper() == "CLUSTER" else CLUSTER_ONLY
        given = sorted(name for name in wrong if getattr(self, name) is not None)
        if given:
            kind = "a cluster" if self.type.upper() == "CLUSTER" else "a node"
            raise ValueError(f"{', '.join(given)}: not attributes of {kind}")
        return self


class OldAction(Action):
    created_at: OldTimestamp | None = None
    entity: OldEntity | None = None  # type: ignore[assignment]


class OldRecord(Record):
    id: Annotated[str, BeforeValidator(_canonical_uuid)] = Field(default_factory=new_id)
    timestamp: OldTimestamp = Field(default_factory=_now)
    level: Annotated[int, BeforeValidator(parse_level)]
    action: OldAction  # type: ignore[assignment]


# -- strategies ------------------------------------------------------------------------------------

# Whitespace that str.strip() removes (some of it not Rust's), and letters whose upper() is ASCII.
SPACES = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2007\u200a\u2028\u202f\u3000\u200b"
ODD = "ıſﬆﬁKİ"


def _cased(name: str) -> st.SearchStrategy[str]:
    letters = [st.sampled_from([c, c.lower(), "ı" if c == "I" else c]) for c in name]
    return st.tuples(*letters).map("".join)


level_names = st.sampled_from(list(LEVELS)).flatmap(_cased)
levels = st.one_of(
    st.integers(0, 60), st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False),
    st.tuples(st.text(SPACES, max_size=2), level_names, st.text(SPACES, max_size=2)).map("".join),
    st.text(alphabet=st.sampled_from("DEBUGINFOWARNCRITLdebuginfo" + SPACES + ODD), max_size=9),
    st.lists(st.integers(10, 50), max_size=1),
)


def _uuid_forms(value: uuid.UUID) -> st.SearchStrategy[str]:
    text = str(value)
    return st.sampled_from([text, text.upper(), value.hex, "{" + text + "}", "urn:uuid:" + text,
                            text.replace("-", "", 1), text[:-1], text + "0", " " + text,
                            text + "\n", text.replace("a", "g")])


ids = st.one_of(st.uuids().flatmap(_uuid_forms), st.text(max_size=40), st.integers(), st.none())

offsets = st.integers(-86399, 86399).map(lambda s: timezone(timedelta(seconds=s)))
edges = st.sampled_from([datetime.min, datetime.max, datetime(1, 1, 2), datetime(9999, 12, 30),
                         datetime(2026, 12, 3, 6, 0)])


def _shift(moment: datetime, seconds: int) -> datetime:
    try:
        return moment + timedelta(seconds=seconds)
    except OverflowError:
        return moment


near = st.tuples(edges, st.one_of(st.integers(-200, 200), st.integers(-200_000, 200_000))).map(
    lambda t: _shift(*t))
small_offsets = st.integers(-3, 3).map(lambda m: timezone(timedelta(minutes=m)))
aware = st.tuples(st.one_of(near, st.datetimes()), st.one_of(offsets, small_offsets, st.just(UTC))
                  ).map(lambda t: t[0].replace(tzinfo=t[1]))
timestamps = st.one_of(
    aware.map(lambda d: d.isoformat()),
    aware.map(lambda d: d.isoformat(timespec="minutes")),
    st.datetimes().map(lambda d: d.isoformat()),  # no offset
    st.integers(-10**12, 10**12), st.floats(allow_nan=False), st.text(max_size=30),
)

kind_values = {"min_size": st.integers(-1, 5), "max_size": st.integers(-1, 5),
               "desired_capacity": st.integers(0, 5), "timeout": st.integers(0, 9),
               "physical_id": st.text(max_size=5), "index": st.integers(-1, 9),
               "role": st.text(max_size=5)}
entity_types = st.one_of(st.sampled_from(["NODE", "node", "CLUSTER", "Cluster", "cluſter",
                                          "CLUﬆER", "cluster ", "PROFILE", ""]), st.text(max_size=8))


@st.composite
def entities(draw: st.DrawFn) -> dict[str, Any]:
    entity: dict[str, Any] = {"type": draw(entity_types)}
    for name in draw(st.lists(st.sampled_from(sorted(kind_values)), unique=True, max_size=3)):
        entity[name] = draw(st.one_of(st.none(), kind_values[name]))
    for name in draw(st.lists(st.sampled_from(["init_at", "created_at", "updated_at"]),
                              unique=True, max_size=2)):
        entity[name] = draw(timestamps)
    return entity


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"level": draw(levels), "action": {"action": "NODE_CREATE"}}
    if draw(st.booleans()):
        body["id"] = draw(ids)
    if draw(st.booleans()):
        body["timestamp"] = draw(timestamps)
    if draw(st.booleans()):
        body["action"]["created_at"] = draw(timestamps)
    if draw(st.booleans()):
        body["action"]["entity"] = draw(entities())
    return body


# -- the comparison --------------------------------------------------------------------------------


def outcome(model: type[Record], body: dict[str, Any], as_json: bool) -> tuple[Any, ...]:
    """``("ok", values)`` or ``("error", locations)``; generated ids and times left out."""
    try:
        if as_json:
            record = model.model_validate_json(json.dumps(body, ensure_ascii=False))
        else:
            record = model.model_validate(body)
    except ValidationError as exc:
        return "error", sorted(str(e["loc"]) for e in exc.errors())
    values = record.model_dump()
    text = json.loads(record.model_dump_json())  # serialised as before, too
    for generated in ("id", "timestamp"):
        if generated not in body:
            values.pop(generated)
            text.pop(generated)
    return "ok", values, text, type(record.level), type(record.id)


def same(body: dict[str, Any], modes: tuple[bool, ...] = (True, False)) -> None:
    for as_json in modes:
        expected = outcome(OldRecord, body, as_json)
        assert outcome(Record, body, as_json) == expected, (as_json, body)


@EXAMPLES
@given(records())
def test_records_are_accepted_and_rejected_as_by_the_python_validators(body):
    same(body)


@EXAMPLES
@given(levels)
def test_levels(level):
    same({"level": level, "action": {"action": "X"}})


@EXAMPLES
@given(ids)
def test_ids(given_id):
    same({"id": given_id, "level": 20, "action": {"action": "X"}})


@EXAMPLES
@given(timestamps)
def test_timestamps(value):
    same({"timestamp": value, "level": 20, "action": {"action": "X"}})


@EXAMPLES
@given(aware)
def test_python_datetimes_keep_the_python_check(value):
    same({"timestamp": value, "level": 20, "action": {"action": "X", "created_at": value}},
         modes=(False,))


def test_edges_of_the_utc_range():
    for text in ["0001-01-01T00:00:00+00:01", "0001-01-01T00:01:00+00:01",
                 "9999-12-31T23:59:59.999999-00:01", "9999-12-31T23:58:59.999999-00:01",
                 "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"]:
        same({"timestamp": text, "level": 20, "action": {"action": "X"}})


def test_errors_keep_their_meaning():
    with_errors = {"level": 60, "id": "nope", "timestamp": "0001-01-01T00:00:00+01:00",
                   "action": {"action": "X", "entity": {"type": "CLUSTER", "role": "r"}}}
    with_errors_json = json.dumps(with_errors)
    try:
        Record.model_validate_json(with_errors_json)
    except ValidationError as exc:
        messages = {e["loc"]: e["msg"] for e in exc.errors()}
    assert "integer 10..50 or a level name" in messages[("level",)]
    assert "must be a UUID" in messages[("id",)]
    assert "greater than or equal to 0001-01-01" in messages[("timestamp",)]
    assert "role: not attributes of a cluster" in messages[("action", "entity")]


def test_generated_ids_come_from_a_pool_refilled_with_fresh_randomness():
    ids_made = [new_id() for _ in range(3000)]  # more than one pool
    assert len(set(ids_made)) == 3000
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids_made)
    assert {uuid.UUID(i).variant for i in ids_made} == {uuid.RFC_4122}
