"""The action-event record of API v1 and the Senlin-derived fields, computed in one place."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetPydanticSchema,
    TypeAdapter,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import core_schema as cs

from .constants import LEVEL_MAX, LEVEL_MIN, LEVELS, OPERATION_ACTIONS

ShortStr = Annotated[str, Field(max_length=255)]
LongStr = Annotated[str, Field(max_length=65536)]


def parse_level(value: object) -> int:
    """Normalise a level given as 10..50 or a name (any case) to its integer."""
    # bool is an int subclass and float would silently truncate: both are mistakes.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("level must be an integer 10..50 or a level name")
    if isinstance(value, str):
        number = LEVELS.get(value.strip().upper())
        if number is None:
            raise ValueError(f"unknown level name {value!r}; use one of {', '.join(LEVELS)}")
        return number
    if not LEVEL_MIN <= value <= LEVEL_MAX:
        raise ValueError(f"level {value} is outside {LEVEL_MIN}..{LEVEL_MAX}")
    return value


Level = Annotated[int, BeforeValidator(parse_level)]
"""A level in the config: validated once, so the Python validator and its messages stay."""


def _fast_or(fast: list[cs.CoreSchema], slow: cs.CoreSchema, kind: str, message: str,
             ser: cs.SerSchema) -> GetPydanticSchema:
    """``fast`` (pydantic-core's own checks, no Python call), else ``slow`` (the Python validator,
    for the rest); if neither takes the input, one error of type ``kind`` at the field itself."""
    # ``fast`` accepts a subset of what ``slow`` does, with the same values, so the semantics are
    # ``slow``'s (tests/test_fast_fields.py checks it with hypothesis). Only the message changes.
    schema = cs.union_schema([*fast, slow], mode="left_to_right", custom_error_type=kind,
                             custom_error_message=message, serialization=ser)
    return GetPydanticSchema(lambda _type, _handler: schema)


LEVEL_MESSAGE = (f"level must be an integer {LEVEL_MIN}..{LEVEL_MAX} or a level name: "
                 f"{', '.join(LEVELS)} (any case)")
RecordLevel = Annotated[int, _fast_or(
    [cs.int_schema(strict=True, ge=LEVEL_MIN, le=LEVEL_MAX),
     # Rust's trim removes a subset of what str.strip() does; whatever it leaves goes on below.
     cs.chain_schema([cs.str_schema(strict=True, strip_whitespace=True, to_upper=True),
                      cs.literal_schema(list(LEVELS)),
                      cs.no_info_plain_validator_function(LEVELS.__getitem__)])],
    cs.no_info_plain_validator_function(parse_level),
    "level_invalid", LEVEL_MESSAGE, cs.simple_ser_schema("int"),
), WithJsonSchema({"anyOf": [
    {"type": "integer", "minimum": LEVEL_MIN, "maximum": LEVEL_MAX},
    {"type": "string", "enum": list(LEVELS), "description": "a level name, in any case"},
]})]
"""A record's level: 10..50 or a name, as ``parse_level``; the common forms stay in Rust."""


def level_name(level: int) -> str:
    """The Senlin priority name for a level (WARNING for 30, rounded down between names)."""
    name = "DEBUG"
    for candidate, number in LEVELS.items():
        if number <= level and candidate != "WARN":
            name = candidate
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _has_utc(value: datetime) -> datetime:
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp has no UTC equivalent (out of range)") from None
    return value


# JSON gives offsets in whole seconds, which pydantic-core compares exactly against these bounds
# (what ``astimezone(UTC)`` can represent); Python datetimes may carry any tzinfo, so they keep
# the Python check.
_UTC_RANGE = cs.datetime_schema(tz_constraint="aware", ge=datetime.min.replace(tzinfo=UTC),
                                le=datetime.max.replace(tzinfo=UTC))
Timestamp = Annotated[AwareDatetime, GetPydanticSchema(
    lambda _type, handler: cs.json_or_python_schema(
        json_schema=_UTC_RANGE,
        python_schema=cs.no_info_after_validator_function(_has_utc, handler(AwareDatetime)),
        serialization=cs.simple_ser_schema("datetime"),
    )
)]
Json = dict[str, Any]

# Attributes Senlin has on one kind of entity only; the other kind rejects them.
CLUSTER_ONLY = frozenset({"min_size", "max_size", "desired_capacity", "timeout"})
NODE_ONLY = frozenset({"physical_id", "index", "role"})


class Entity(_Strict):
    """What an action acts on: a cluster or a node, with Senlin's attributes of either."""

    type: ShortStr
    id: ShortStr | None = None
    name: ShortStr | None = None
    cluster_id: ShortStr | None = None
    status: ShortStr | None = None
    status_reason: LongStr | None = None
    profile_id: ShortStr | None = None
    init_at: Timestamp | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None
    user: ShortStr | None = None
    project: ShortStr | None = None
    domain: ShortStr | None = None
    metadata: Json | None = None
    data: Json | None = None
    dependents: Json | None = None
    # a cluster's
    min_size: int | None = None
    max_size: int | None = None
    desired_capacity: int | None = None
    timeout: int | None = None
    # a node's
    physical_id: ShortStr | None = None
    index: int | None = None
    role: ShortStr | None = None

    @model_validator(mode="after")
    def _kind_fits(self) -> Entity:
        # Python, not a pydantic-core union: the check follows str.upper(), and its error names
        # the entity, not one of two variants. The common case costs two lookups.
        cluster = self.type.upper() == "CLUSTER"
        values = self.__dict__
        if cluster:
            if values["physical_id"] is None and values["index"] is None and values["role"] is None:
                return self
        elif (values["min_size"] is None and values["max_size"] is None
              and values["desired_capacity"] is None and values["timeout"] is None):
            return self
        wrong = NODE_ONLY if cluster else CLUSTER_ONLY
        given = sorted(name for name in wrong if values[name] is not None)
        kind = "a cluster" if cluster else "a node"
        raise ValueError(f"{', '.join(given)}: not attributes of {kind}")


class Action(_Strict):
    """The Senlin action an event is about; attribute names follow senlin.engine.actions."""

    action: ShortStr
    id: ShortStr | None = None
    name: ShortStr | None = None
    cause: ShortStr | None = None
    status: ShortStr | None = None
    status_reason: LongStr | None = None
    target: ShortStr | None = None
    user: ShortStr | None = None
    project: ShortStr | None = None
    created_at: Timestamp | None = None
    start_time: float | None = None
    end_time: float | None = None
    timeout: int | None = None
    inputs: Json = Field(default_factory=dict)
    outputs: Json = Field(default_factory=dict)
    data: Json = Field(default_factory=dict)
    entity: Entity | None = None


class Context(_Strict):
    """The request context of the action: ``senlin.common.context.RequestContext.to_dict()``.

    Credentials (``auth_token``, ``auth_token_info``, ``password``) are not accepted: an event
    pipeline is no place for them.
    """

    user: ShortStr | None = None
    user_id: ShortStr | None = None
    user_name: ShortStr | None = None
    user_domain: ShortStr | None = None
    user_domain_name: ShortStr | None = None
    project: ShortStr | None = None
    project_id: ShortStr | None = None
    project_name: ShortStr | None = None
    project_domain: ShortStr | None = None
    project_domain_name: ShortStr | None = None
    domain: ShortStr | None = None
    domain_id: ShortStr | None = None
    domain_name: ShortStr | None = None
    system_scope: ShortStr | None = None
    is_admin: bool | None = None
    is_admin_project: bool | None = None
    read_only: bool | None = None
    show_deleted: bool | None = None
    request_id: ShortStr | None = None
    global_request_id: ShortStr | None = None
    resource_uuid: ShortStr | None = None
    roles: list[ShortStr] | None = None
    user_identity: ShortStr | None = None
    auth_url: ShortStr | None = None
    trusts: ShortStr | None = None
    region_name: ShortStr | None = None
    api_version: ShortStr | None = None


_IDS: list[str] = []  # uuid4s made ahead, from one os.urandom call per POOL
POOL = 256
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _make_ids() -> None:
    # uuid.uuid4() costs 2.5 us (a getrandom call per id, and UUID's checks); this is the
    # same 122 random bits, version 4 and RFC 4122 variant, for 0.6 us.
    h = os.urandom(16 * POOL).hex()
    _IDS.extend(f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-{_VARIANT[h[i + 16]]}"
                f"{h[i + 17:i + 20]}-{h[i + 20:i + 32]}" for i in range(0, len(h), 32))


def new_id() -> str:
    """A UUIDv4, as Senlin's: random in all 8 leading characters, so short ids stay unique."""
    try:
        return _IDS.pop()
    except IndexError:
        _make_ids()
        return _IDS.pop()


# A child process must not hand out the ids its parent still holds.
os.register_at_fork(after_in_child=_IDS.clear)


def _now() -> datetime:
    return datetime.now(UTC)


def _canonical_uuid(value: object) -> object:
    return str(uuid.UUID(value)) if isinstance(value, str) else value


CANONICAL_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
RecordId = Annotated[str, _fast_or(
    # Already canonical (what engines send, and what the spool holds): kept as it is.
    [cs.str_schema(strict=True, pattern=CANONICAL_UUID)],
    cs.no_info_before_validator_function(_canonical_uuid, cs.str_schema()),
    "uuid_invalid", "id must be a UUID, such as 4f0c9a52-1c4a-4f5b-9d7e-0e4f7a1d2c3b",
    cs.simple_ser_schema("str"),
), WithJsonSchema({"type": "string", "format": "uuid"})]


class Record(_Strict):
    """One action event, as Senlin's ``dump(level, action, **kwargs)`` call, written as data."""

    id: RecordId = Field(default_factory=new_id)
    timestamp: Timestamp = Field(default_factory=_now)
    level: RecordLevel
    phase: ShortStr | None = None
    reason: LongStr | None = None
    extra: Json | None = None
    action: Action
    context: Context | None = None

    def derived(self) -> Derived:
        """The fields Senlin's database dispatcher stored for this event."""
        return Derived.of(self)

    def dump_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``EventBackend.dump`` for this record."""
        return {
            "timestamp": self.timestamp,
            "phase": self.phase,
            "reason": self.reason,
            "extra": self.extra,
            "id": self.id,
            "context": self.context,
        }


class Derived(NamedTuple):
    """Senlin's ``senlin.events.database.DBEvent.dump`` values, computed from a record."""

    oid: str | None
    oname: str | None
    otype: str | None
    cluster_id: str | None
    action: str
    status: str | None
    status_reason: str | None
    meta_data: dict[str, Any]
    user: str | None
    project: str | None

    @classmethod
    def of(cls, record: Record) -> Derived:
        action = record.action
        entity = action.entity
        name = action.action
        if name in OPERATION_ACTIONS:
            operation = action.inputs.get("operation")
            name = operation if isinstance(operation, str) and operation else name
        context = record.context
        # Senlin takes user and project from the request context; without one, from the action.
        user, project = (context.user_id, context.project_id) if context is not None \
            else (action.user, action.project)
        # tuple.__new__ with the values in field order: a NamedTuple's keyword __new__ costs a
        # microsecond, once per record and dispatcher.
        if entity is None:
            return _tuple_new(cls, (None, None, None, None, name, record.phase or None,
                                    record.reason or None, record.extra or {}, user, project))
        otype = entity.type.upper()
        return _tuple_new(cls, (
            entity.id, entity.name, otype,
            entity.id if otype == "CLUSTER" else entity.cluster_id,
            name, record.phase or entity.status, record.reason or entity.status_reason,
            record.extra or {}, user, project,
        ))


_tuple_new = tuple.__new__


RECORD = TypeAdapter(Record)
RECORDS = TypeAdapter(list[Record])
_to_json = Record.__pydantic_serializer__.to_json


def spool_json(record: Record) -> str:
    """The record's JSON as the spool keeps it: None fields left out (each defaults to None)."""
    # pydantic-core's serializer itself: model_dump_json's Python wrapper costs 0.7 us a record.
    return _to_json(record, exclude_none=True).decode()
