"""The action-event record of API v1 and the Senlin-derived fields, computed in one place."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
)

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


def level_name(level: int) -> str:
    """The Senlin priority name for a level (WARNING for 30, rounded down between names)."""
    name = "DEBUG"
    for candidate, number in LEVELS.items():
        if number <= level and candidate != "WARN":
            name = candidate
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Entity(_Strict):
    """What an action acts on: a cluster or a node."""

    type: ShortStr
    id: ShortStr | None = None
    name: ShortStr | None = None
    cluster_id: ShortStr | None = None
    status: ShortStr | None = None
    status_reason: LongStr | None = None


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
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    entity: Entity | None = None


# UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, version 7, 12 random bits, variant 0b10,
# 62 random bits. The version and variant bits are forced over 80 random bits.
_V7_KEEP = ~(0xF << 76) & ~(0x3 << 62)
_V7_SET = 0x7 << 76 | 0x2 << 62


def new_id() -> str:
    """A UUIDv7: time-ordered, so stores index new ids at their end instead of at random."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10)) & _V7_KEEP
    h = "%032x" % (value | _V7_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _now() -> datetime:
    return datetime.now(UTC)


def _canonical_uuid(value: object) -> object:
    return str(uuid.UUID(value)) if isinstance(value, str) else value


def _has_utc(value: datetime) -> datetime:
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp has no UTC equivalent (out of range)") from None
    return value


class Record(_Strict):
    """One action event, as Senlin's ``dump(level, action, **kwargs)`` call, written as data."""

    id: Annotated[str, BeforeValidator(_canonical_uuid)] = Field(default_factory=new_id)
    timestamp: Annotated[AwareDatetime, AfterValidator(_has_utc)] = Field(default_factory=_now)
    level: Level
    phase: ShortStr | None = None
    reason: LongStr | None = None
    extra: dict[str, Any] | None = None
    action: Action

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
        otype = entity.type.upper() if entity else None
        if entity is None:
            cluster_id = None
        elif otype == "CLUSTER":
            cluster_id = entity.id
        else:
            cluster_id = entity.cluster_id
        name = action.action
        if name in OPERATION_ACTIONS:
            operation = action.inputs.get("operation")
            name = operation if isinstance(operation, str) and operation else name
        return cls(
            oid=entity.id if entity else None,
            oname=entity.name if entity else None,
            otype=otype,
            cluster_id=cluster_id,
            action=name,
            status=record.phase or (entity.status if entity else None),
            status_reason=record.reason or (entity.status_reason if entity else None),
            meta_data=record.extra or {},
            user=action.user,
            project=action.project,
        )


RECORD = TypeAdapter(Record)
RECORDS = TypeAdapter(list[Record])
