"""Senlin's own engine objects for the scripts here (run in a Senlin environment, not dispatchd's).

``configure(db_url)`` sets Senlin's options; ``action_of(spec)`` builds a Senlin ``Action`` whose
``entity`` is a ``Cluster`` or ``Node``, from a JSON-able spec:
``{"kind": "cluster"|"node", "entity": {...}, "action": {...}, "context": {...}}``.
Times in a spec are ISO 8601 strings; they become aware UTC datetimes as Senlin's are.
"""

from __future__ import annotations

import datetime
from typing import Any

TIME_FIELDS = ("init_at", "created_at", "updated_at")


def configure(db_url: str | None = None, **overrides: Any) -> Any:
    """Load Senlin's options (and oslo.db's) with ``[database] connection = db_url``."""
    import senlin.conf  # noqa: F401  (registers Senlin's options)
    from oslo_config import cfg
    from oslo_db import options as db_options

    cfg.CONF([], project="senlin", default_config_files=[])
    if db_url:
        db_options.set_defaults(cfg.CONF, connection=db_url)
    for key, value in overrides.items():
        group, _, name = key.rpartition(".")
        cfg.CONF.set_override(name, value, group=group or None)
    return cfg.CONF


def _times(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for key in TIME_FIELDS:
        if isinstance(out.get(key), str):
            out[key] = datetime.datetime.fromisoformat(out[key]).astimezone(datetime.UTC)
    return out


def context_of(values: dict[str, Any]) -> Any:
    from senlin.common import context

    return context.RequestContext(**values)


def action_of(spec: dict[str, Any]) -> Any:
    """A Senlin action with its entity and request context, as the engine holds them."""
    from senlin.engine import cluster, node
    from senlin.engine.actions import base

    ctx = context_of(spec.get("context", {"user_id": "u1", "project_id": "p1"}))
    entity = dict(_times(spec.get("entity", {})))
    # Built without an id and given one after: with an id, the constructors load the profile,
    # policies and nodes from Senlin's database, which the scripts here do not fill.
    entity_id = entity.pop("id", None)
    if spec.get("kind", "cluster") == "cluster":
        obj = cluster.Cluster(entity.pop("name", "web"), entity.pop("desired_capacity", 1),
                              entity.pop("profile_id", "prof-1"), context=None, **entity)
    else:
        obj = node.Node(entity.pop("name", "n1"), entity.pop("profile_id", "prof-1"),
                        entity.pop("cluster_id", ""), context=None, **entity)
    obj.id = entity_id
    values = _times(spec.get("action", {}))
    name = values.pop("action", "CLUSTER_CREATE")
    # Action() picks ClusterAction or NodeAction, whose __init__ loads the target from Senlin's
    # database (and leaves SQLite locked when it is not there): pick, then init the base only.
    act = base.Action.__new__(base.Action, obj.id, name, ctx)
    base.Action.__init__(act, values.pop("target", obj.id), name, ctx, **values)
    act.entity = obj
    return act
