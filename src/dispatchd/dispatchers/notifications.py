"""What the ``message`` dispatcher puts on the wire: plain JSON, or Senlin's oslo notification.

The ``senlin`` format reproduces what Senlin's ``MessageEvent.dump`` sends through oslo.messaging:
a v2 envelope around a notification whose payload is a ``ClusterActionPayload`` or
``NodeActionPayload`` primitive, field for field and encoding for encoding (``senlin.objects``),
so OpenStack notification consumers read dispatchd unchanged.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json

from dispatchd import Context, Derived, Entity, Record, level_name

OSLO_VERSION = "2.0"
NAMESPACE = "senlin"
OBJECT_VERSION = "1.0"

# oslo.messaging's notifier methods for Senlin's levels (senlin.common.consts.EVENT_LEVELS, whose
# 30 is "WARN"); Senlin calls getattr(notifier, name.lower()), which sends the upper-case name.
OSLO_PRIORITIES = {10: "DEBUG", 20: "INFO", 30: "WARN", 40: "ERROR", 50: "CRITICAL"}

# The fields of Senlin's payload objects in declaration order, each with whether it is nullable.
# A non-nullable field without a value is left out: Senlin cannot build that payload at all.
CLUSTER_FIELDS = (
    ("id", False), ("name", False), ("profile_id", False), ("init_at", False),
    ("created_at", True), ("updated_at", True), ("min_size", False), ("max_size", False),
    ("desired_capacity", False), ("timeout", False), ("status", False),
    ("status_reason", False), ("metadata", True), ("data", True), ("user", False),
    ("project", False), ("domain", True), ("dependents", True),
)
NODE_FIELDS = (
    ("id", False), ("name", False), ("profile_id", False), ("cluster_id", False),
    ("physical_id", True), ("index", False), ("role", True), ("init_at", False),
    ("created_at", True), ("updated_at", True), ("status", False), ("status_reason", False),
    ("metadata", True), ("data", True), ("user", False), ("project", False), ("domain", True),
    ("dependents", True),
)
ACTION_FIELDS = (
    ("id", False), ("name", False), ("created_at", True), ("target", False), ("action", False),
    ("start_time", False), ("end_time", True), ("timeout", True), ("status", False),
    ("status_reason", False), ("inputs", True), ("outputs", True), ("data", True),
    ("user", False), ("project", False),
)
TIME_FIELDS = frozenset({"init_at", "created_at", "updated_at"})
JSON_FIELDS = frozenset({"metadata", "data", "dependents", "inputs", "outputs"})

# Keys of Senlin's RequestContext.to_dict(), in its order: the envelope's ``_context_<key>``.
CONTEXT_KEYS = (
    "user", "project_id", "system_scope", "project", "domain", "user_domain", "project_domain",
    "is_admin", "read_only", "show_deleted", "auth_token", "request_id", "global_request_id",
    "resource_uuid", "roles", "user_identity", "is_admin_project", "auth_url", "auth_token_info",
    "user_id", "user_name", "user_domain_name", "project_name", "project_domain_name",
    "domain_id", "domain_name", "trusts", "region_name", "password", "api_version",
)
# Never in a record (the model rejects them); oslo.messaging's redacted context sends them null.
CREDENTIALS = frozenset({"auth_token", "auth_token_info", "password"})


def action_name(record: Record) -> str:
    """Senlin's ``EventBackend._get_action_name``: the part after the first '_', lower case."""
    parts = record.action.action.split("_", 1)
    if len(parts) == 1:
        return parts[0].lower()
    name = parts[1].lower()
    if name == "operation":
        operation = record.action.inputs.get("operation")
        name = operation if isinstance(operation, str) and operation else name
    return name


def event_type(record: Record, derived: Derived) -> str:
    """dispatchd's event type: ``<otype>.<action>[.<phase>]``, e.g. ``cluster.scale_out.end``."""
    otype = (derived.otype or "event").lower()
    base = f"{otype}.{action_name(record)}"
    return f"{base}.{record.phase}" if record.phase else base


def senlin_kind(record: Record) -> str:
    """``cluster`` or ``node``: Senlin sends a node payload for any entity that is no cluster."""
    entity = record.action.entity
    if entity is not None:
        return "cluster" if entity.type.upper() == "CLUSTER" else "node"
    # Senlin cannot notify without an entity; the action's own name says what it acts on.
    return "node" if record.action.action.upper().startswith("NODE_") else "cluster"


def senlin_event_type(record: Record) -> str:
    """Senlin's ``EventType.to_notification_field``: a phase never given renders as ``None``."""
    return f"{senlin_kind(record)}.{action_name(record)}.{record.phase}"


def priority(record: Record) -> str:
    """The ``json`` format's priority: ``DEBUG``...``CRITICAL`` with ``WARNING`` for 30."""
    return level_name(record.level)


def oslo_priority(level: int) -> str:
    """The oslo.messaging priority Senlin sends for a level; between names, the lower one."""
    return OSLO_PRIORITIES[max(n for n in OSLO_PRIORITIES if n <= level)]


def json_body(record: Record, derived: Derived, etype: str) -> bytes:
    """The record as received (with its id), None fields left out, plus derived fields."""
    # Python-mode dump and pydantic-core's encoder: half the time of a JSON-mode dump and json.dumps.
    body: dict[str, Any] = record.model_dump(exclude_none=True)
    body["event_type"] = etype
    body["priority"] = priority(record)
    body["derived"] = {k: v for k, v in derived._asdict().items() if v is not None}
    return to_json(body)


def senlin_body(record: Record, publisher_id: str) -> bytes:
    """The oslo.messaging v2 envelope that Senlin's ``MessageEvent.dump`` sends for a record."""
    message = {
        "message_id": record.id,
        "publisher_id": publisher_id,
        "event_type": senlin_event_type(record),
        "priority": oslo_priority(record.level),
        "payload": action_payload(record),
        # oslo: str(timeutils.utcnow()), naive UTC with a space, no fraction when it is zero.
        "timestamp": str(record.timestamp.astimezone(UTC).replace(tzinfo=None)),
        # Derived from the record id, so a republished record carries the same one and oslo's
        # listener (which drops a _unique_id it has just seen) takes it once.
        "_unique_id": uuid.UUID(record.id).hex,
    }
    message.update(("_context_" + k, v) for k, v in context_values(record).items())
    # oslo.messaging's serialize_msg: the inner message is a JSON string (jsonutils.dumps).
    envelope = {"oslo.version": OSLO_VERSION, "oslo.message": json.dumps(message)}
    return json.dumps(envelope, separators=(",", ":")).encode()


def context_values(record: Record) -> dict[str, Any]:
    """Senlin's serialized request context for the record; without one, the action's user."""
    context = record.context or Context(
        user_id=record.action.user, project_id=record.action.project
    )
    values: dict[str, Any] = {}
    for key in CONTEXT_KEYS:
        values[key] = None if key in CREDENTIALS else getattr(context, key)
    # oslo.context writes each id twice (user and user_id, ...); a record may give either name.
    for short, long in (("user", "user_id"), ("project", "project_id"), ("domain", "domain_id")):
        values[short] = values[long] = values[short] or values[long]
    if values["user_identity"] is None:
        values["user_identity"] = " ".join(
            str(values[k] or "-")
            for k in ("user", "project", "domain", "user_domain", "project_domain")
        )
    return values


def action_payload(record: Record) -> dict[str, Any]:
    """``ClusterActionPayload`` or ``NodeActionPayload.obj_to_primitive()`` for the record."""
    action = record.action
    entity = action.entity or Entity(type="CLUSTER" if senlin_kind(record) == "cluster" else "NODE")
    values = dict(entity)
    values["status_reason"] = entity.status_reason or ""
    # Senlin reads these from the entity; a record without them gets the action's.
    values["user"] = entity.user or action.user
    values["project"] = entity.project or action.project
    action_values = dict(action)
    action_values["status_reason"] = action.status_reason or ""
    action_primitive = _primitive("ActionPayload", ACTION_FIELDS, action_values)
    if senlin_kind(record) == "cluster":
        name, key, entity_primitive = (
            "ClusterActionPayload", "cluster", _primitive("ClusterPayload", CLUSTER_FIELDS, values)
        )
    else:
        values["cluster_id"] = entity.cluster_id or ""  # an orphan node's, as Senlin's Node
        name, key, entity_primitive = (
            "NodeActionPayload", "node", _primitive("NodePayload", NODE_FIELDS, values)
        )
    return _object(name, {key: entity_primitive, "action": action_primitive, "exception": None})


def _primitive(
    name: str, fields: tuple[tuple[str, bool], ...], values: dict[str, Any]
) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for field, nullable in fields:
        value = values.get(field)
        if value is None:
            if nullable:
                data[field] = None
            continue
        if field in TIME_FIELDS:
            value = _isotime(value)
        elif field in JSON_FIELDS:
            value = json.dumps(value)  # senlin.objects.fields.Json: jsonutils.dumps
        data[field] = value
    return _object(name, data)


def _object(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """``VersionedObject.obj_to_primitive`` of a Senlin notification object."""
    return {
        "senlin_object.name": name,
        "senlin_object.namespace": NAMESPACE,
        "senlin_object.version": OBJECT_VERSION,
        "senlin_object.data": data,
    }


def _isotime(value: datetime) -> str:
    """oslo.versionedobjects' DateTime primitive: UTC, whole seconds, ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
