"""``dispatchd events``: the database dispatcher's stored events, listed or shown one at a time."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from .constants import EVENT_DEFAULT_SORT, EVENT_FILTERS, EVENT_LIMIT, EVENT_MAX_LIMIT, SHORT_ID
from .control import Client
from .tables import one_line, print_table

COLUMNS = ("ID", "TIMESTAMP", "LEVEL", "OTYPE", "ONAME", "OID", "CLUSTER", "ACTION", "STATUS",
           "STATUS REASON")


def add_arguments(events: argparse.ArgumentParser,
                  common: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The options of ``events`` and of ``events show``; returns both parsers, for ``-c``."""
    for name in EVENT_FILTERS:
        events.add_argument(f"--{name.replace('_', '-')}", dest=name, action="append",
                            metavar="VALUE", help=f"only events with this {name} (repeatable)"
                            + (": a number or a name (INFO)" if name == "level" else ""))
    events.add_argument("--since", help="only events at or after this RFC 3339 time")
    events.add_argument("--until", help="only events before this RFC 3339 time")
    events.add_argument("--sort", help=f"key[:asc|desc],... (default: {EVENT_DEFAULT_SORT})")
    events.add_argument("--limit", type=int, default=EVENT_LIMIT,
                        help=f"at most this many, up to {EVENT_MAX_LIMIT} (default: {EVENT_LIMIT})")
    events.add_argument("--marker", help="start after the event with this id (the last one seen)")
    _display_options(events, "one JSON object per event")
    actions = events.add_subparsers(title="actions", dest="action", metavar="ACTION")
    show = actions.add_parser("show", parents=[common], help="show one event",
                              description="Show one event, by its id or a unique prefix of "
                                          f"{SHORT_ID}+ characters (Senlin's short ids).")
    show.add_argument("id", help="the event's id, or its first 8 or more characters")
    # Suppressed defaults: an option given before "show" is not overwritten by show's default.
    _display_options(show, "the event as a JSON object", argparse.SUPPRESS)
    return [events, show]


def _display_options(parser: argparse.ArgumentParser, what: str, default: Any = False) -> None:
    parser.add_argument("--json", action="store_true", default=default,
                        help=f"print {what}, for scripts")
    parser.add_argument("--full-id", action="store_true", default=default,
                        help="print ids whole, not their first 8 characters")


def run(args: argparse.Namespace, client: Client, timeout: float) -> int:
    if args.action == "show":
        body = asyncio.run(client.request("GET", f"/v1/events/{args.id}", timeout))
        event: dict[str, Any] = body.get("event", {})
        if args.json:
            print(json.dumps(event))
        else:
            for key, value in event.items():
                shown = json.dumps(value) if isinstance(value, dict | list) else value
                print(f"{key:>13}: {'-' if shown is None else shown}")
        return 0
    body = asyncio.run(client.request("GET", "/v1/events", timeout, _params(args)))
    events: list[dict[str, Any]] = body.get("events", [])
    if args.json:
        for item in events:
            print(json.dumps(item))
    elif events:
        print_table(list(COLUMNS), [_row(item, args.full_id) for item in events])
    more = f"; more after them: --marker {events[-1]['id']}" if len(events) == args.limit else ""
    print(f"{len(events)} events{more}", file=sys.stderr)
    return 0


def _params(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The query as (name, value) pairs: a repeated filter is a repeated parameter."""
    params = [(name, value) for name in EVENT_FILTERS for value in getattr(args, name) or ()]
    params += [(name, str(value)) for name in ("since", "until", "sort", "marker", "limit")
               if (value := getattr(args, name)) is not None]
    return params


def _row(event: dict[str, Any], full_id: bool) -> list[str]:
    def ident(value: Any) -> str:
        return "-" if not value else str(value) if full_id else str(value)[:SHORT_ID]

    stamp = str(event.get("timestamp") or "-")
    return [
        ident(event.get("id")), stamp.split(".")[0].removesuffix("Z") + "Z" if stamp != "-" else "-",
        str(event.get("level") or "-"), str(event.get("otype") or "-"),
        str(event.get("oname") or "-"), ident(event.get("oid")), ident(event.get("cluster_id")),
        str(event.get("action") or "-"), str(event.get("status") or "-"),
        one_line(str(event.get("status_reason") or "-")),
    ]
