"""What the ``message`` dispatcher puts on the wire: plain JSON, or Senlin's oslo notification.

The ``senlin`` format reproduces ``senlin.objects.notification``: an oslo.messaging v2 envelope
around a notification whose payload is a ``ClusterActionPayload`` or ``NodeActionPayload``
versioned object, so OpenStack notification consumers read dispatchd unchanged.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from pydantic_core import to_json

from dispatchd import Derived, Record, level_name

OSLO_VERSION = "2.0"
NAMESPACE = "senlin"
OBJECT_VERSION = "1.0"


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
    """``<otype>.<action>[.<phase>]``, e.g. ``cluster.scale_out.end``."""
    otype = (derived.otype or "event").lower()
    base = f"{otype}.{action_name(record)}"
    return f"{base}.{record.phase}" if record.phase else base


def priority(record: Record) -> str:
    return level_name(record.level)


def json_body(record: Record, derived: Derived, etype: str) -> bytes:
    """The record as received (with its id) plus its derived fields, event type and priority."""
    # Python-mode dump and pydantic-core's encoder: half the time of a JSON-mode dump and json.dumps.
    body: dict[str, Any] = record.model_dump()
    body["event_type"] = etype
    body["priority"] = priority(record)
    body["derived"] = derived._asdict()
    return to_json(body)


def senlin_body(record: Record, derived: Derived, etype: str, publisher_id: str) -> bytes:
    """An oslo.messaging v2 notification envelope, as Senlin's message dispatcher emitted."""
    message = {
        "message_id": record.id,
        "publisher_id": publisher_id,
        "event_type": etype,
        "priority": priority(record),
        "payload": _action_payload(record, derived),
        # oslo_utils.timeutils.utcnow() rendered by str(): naive UTC with a space.
        "timestamp": record.timestamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
        "_unique_id": record.id.replace("-", ""),
        "_context_user_id": record.action.user,
        "_context_project_id": record.action.project,
    }
    return _dumps({"oslo.version": OSLO_VERSION, "oslo.message": json.dumps(message)})


def _versioned(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """``VersionedObject.obj_to_primitive``: only the fields that are set."""
    return {
        "senlin_object.name": name,
        "senlin_object.namespace": NAMESPACE,
        "senlin_object.version": OBJECT_VERSION,
        "senlin_object.data": {k: v for k, v in data.items() if v is not None},
    }


def _action_payload(record: Record, derived: Derived) -> dict[str, Any]:
    action = record.action
    entity = action.entity
    action_data = {
        "id": action.id, "name": action.name, "action": action.action, "target": action.target,
        "status": action.status, "status_reason": action.status_reason,
        "inputs": action.inputs, "outputs": action.outputs, "data": action.data,
        "user": action.user, "project": action.project,
    }
    entity_data = {
        "id": derived.oid, "name": derived.oname,
        "status": entity.status if entity else None,
        "status_reason": entity.status_reason if entity else None,
        "user": action.user, "project": action.project,
    }
    if derived.otype == "NODE":
        entity_data["cluster_id"] = derived.cluster_id
        return _versioned("NodeActionPayload", {
            "node": _versioned("NodePayload", entity_data),
            "action": _versioned("ActionPayload", action_data),
        })
    return _versioned("ClusterActionPayload", {
        "cluster": _versioned("ClusterPayload", entity_data),
        "action": _versioned("ActionPayload", action_data),
    })


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()
