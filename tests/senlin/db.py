"""Senlin's own database code on an SQLite file; run in a Senlin environment.

    db.py migrate URL          Senlin's migrations (senlin-manage db_sync)
    db.py dump URL < items     Senlin's DBEvent.dump for each item; prints the bridge's records
    db.py read URL < plan      reads through Senlin's DB API and versioned objects
    db.py records - < items    only the bridge's records for the items (no database)
    db.py purge URL DAYS       Senlin's event_purge of events older than DAYS

An item is ``{"spec": <objects.action_of spec>, "level": 20, "kwargs": {...}}``; a kwargs
``timestamp`` is an ISO 8601 string. Answers are JSON on stdout.
"""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any

import objects


def migrate(url: str) -> dict[str, Any]:
    from senlin.db.sqlalchemy import migration

    migration.db_sync(url)
    return {"migrated": url}


def _kwargs(item: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(item.get("kwargs", {}))
    if isinstance(kwargs.get("timestamp"), str):
        kwargs["timestamp"] = datetime.datetime.fromisoformat(kwargs["timestamp"])
    return kwargs


def dump(url: str | None, items: list[dict[str, Any]]) -> dict[str, Any]:
    from dispatchd_senlin.records import record_of
    from senlin.events import database

    objects.configure(url)
    records = []
    for item in items:
        action = objects.action_of(item["spec"])
        if url:
            database.DBEvent.dump(item["level"], action, **_kwargs(item))
        records.append(record_of(item["level"], action, **_kwargs(item)))
    return {"records": records}


def _senlin_schema_beside(url: str) -> None:
    """Senlin's event query joins its cluster table: make it (empty) where only events are."""
    from senlin.db.sqlalchemy import api, models

    models.Cluster.__table__.create(api.get_engine(), checkfirst=True)


def read(url: str, plan: dict[str, Any]) -> dict[str, Any]:
    from senlin.common import context
    from senlin.db.sqlalchemy import api
    from senlin.objects import event as eo

    objects.configure(url)
    if plan.get("add_cluster_table"):
        _senlin_schema_beside(url)
    ctx = context.get_admin_context()
    every = {"project_safe": False}
    pages, marker = [], None
    while len(pages) < 1000:
        page = api.event_get_all(ctx, limit=2, marker=marker, **every)
        if not page:
            break
        pages.append([e.id for e in page])
        marker = page[-1].id
    events = [eo.Event._from_db_object(ctx, eo.Event(), e) for e in api.event_get_all(ctx, **every)]
    fields = {e.id: {name: _plain(getattr(e, name)) for name in eo.Event.fields} for e in events}
    found = {}
    for event_id in fields:
        found[event_id[:8]] = eo.Event.find(ctx, event_id[:8], **every).id
    counts = {
        f"{key}={value}": len(api.event_get_all(ctx, filters={key: value}, **every))
        for key, value in plan.get("filters", [])
    }
    by_cluster = {cid: api.event_count_by_cluster(ctx, cid, **every)
                  for cid in plan.get("clusters", [])}
    newest_first = [e.id for e in api.event_get_all(ctx, sort="timestamp:desc", **every)]
    return {"pages": pages, "fields": fields, "short_ids": found, "counts": counts,
            "by_cluster": by_cluster, "newest_first": newest_first}


def purge(url: str, days: int) -> dict[str, Any]:
    """``senlin-manage event_purge``, in a process of its own: the reads above leave SQLite
    read transactions open (Senlin's queries outlive their sessions), which block a writer."""
    from senlin.common import context
    from senlin.db.sqlalchemy import api

    objects.configure(url)
    purged = api.event_purge(None, "days", days)
    left = [e.id for e in api.event_get_all(context.get_admin_context(), project_safe=False)]
    return {"purged": purged, "left": sorted(left)}


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime.datetime) else value


def main() -> None:
    command, url = sys.argv[1], sys.argv[2]
    stdin = json.load(sys.stdin) if command not in ("migrate", "purge") else None
    result = {"migrate": lambda: migrate(url), "dump": lambda: dump(url, stdin),
              "records": lambda: dump(None, stdin), "read": lambda: read(url, stdin),
              "purge": lambda: purge(url, int(sys.argv[3]))}[command]()
    json.dump(result, sys.stdout, default=str)


if __name__ == "__main__":
    main()
