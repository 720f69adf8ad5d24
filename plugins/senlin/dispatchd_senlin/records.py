"""dispatchd records from Senlin's objects, read as Senlin's own dispatchers read them.

Standard library only: it runs inside Senlin's engine, and dispatchd's tests import it too.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

LONG = 65536  # dispatchd's limit on a reason; a longer one is cut, not rejected
SHORT = 255

# The keys of RequestContext.to_dict() that dispatchd's record accepts; credentials stay behind.
CONTEXT_KEYS = (
    "user", "user_id", "user_name", "user_domain", "user_domain_name",
    "project", "project_id", "project_name", "project_domain", "project_domain_name",
    "domain", "domain_id", "domain_name", "system_scope", "is_admin", "is_admin_project",
    "read_only", "show_deleted", "request_id", "global_request_id", "resource_uuid", "roles",
    "user_identity", "auth_url", "trusts", "region_name", "api_version",
)
COMMON = ("id", "name", "profile_id", "status", "init_at", "created_at", "updated_at",
          "user", "project", "domain", "metadata", "data", "dependents")
ENTITY_FIELDS = {
    "CLUSTER": COMMON + ("min_size", "max_size", "desired_capacity", "timeout"),
    "NODE": COMMON + ("cluster_id", "physical_id", "index", "role"),
}
ACTION_FIELDS = ("id", "name", "cause", "status", "target", "user", "project", "created_at",
                 "start_time", "end_time", "timeout", "inputs", "outputs", "data")


def record_of(level: int, action: Any, **kwargs: Any) -> dict[str, Any]:
    """The record for Senlin's ``dump(level, action, phase=, reason=, timestamp=, extra=)``."""
    timestamp = kwargs.get("timestamp") or datetime.datetime.now(datetime.timezone.utc)
    record: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "timestamp": _time(timestamp),
        "level": int(level),
        "action": _action(action),
    }
    for key in ("phase", "reason", "extra"):
        if kwargs.get(key):
            record[key] = kwargs[key]
    if "reason" in record:
        record["reason"] = _cut(str(record["reason"]), LONG)
    context = getattr(action, "context", None)
    if context is not None:
        record["context"] = context_of(context)
    return record


def context_of(context: Any) -> dict[str, Any]:
    values = context.to_dict()
    found = {key: values.get(key) for key in CONTEXT_KEYS if values.get(key) is not None}
    for key, value in found.items():
        if isinstance(value, list):
            found[key] = [_cut(str(item), SHORT) for item in value]
        elif not isinstance(value, bool):
            found[key] = _cut(str(value), SHORT)  # api_version is an object in Senlin
    return found


def _action(action: Any) -> dict[str, Any]:
    data = _attributes(action, ACTION_FIELDS)
    data["action"] = action.action
    data["status_reason"] = _cut(getattr(action, "status_reason", None) or "", LONG)
    entity = getattr(action, "entity", None)
    if entity is not None:
        data["entity"] = _entity(entity)
    return data


def _entity(entity: Any) -> dict[str, Any]:
    # Senlin's EventBackend._check_entity: the entity's class name, upper case.
    otype = type(entity).__name__.upper()
    data = _attributes(entity, ENTITY_FIELDS.get(otype, COMMON))
    data["type"] = otype
    data["status_reason"] = _cut(getattr(entity, "status_reason", None) or "", LONG)
    return data


def _attributes(obj: Any, names: Any) -> dict[str, Any]:
    data = {}
    for name in names:
        value = getattr(obj, name, None)
        if value is None:
            continue
        if isinstance(value, datetime.datetime):
            value = _time(value)
        elif isinstance(value, str) and name not in ("inputs", "outputs", "data"):
            value = _cut(value, SHORT)
        data[name] = value
    return data


def _time(value: datetime.datetime) -> str:
    # Senlin's times are UTC, aware or not (oslo_utils.timeutils.utcnow()).
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.isoformat()


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"

