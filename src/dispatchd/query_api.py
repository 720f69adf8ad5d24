"""``GET /v1/events`` and ``GET /v1/events/{id}``: reading the ``database`` dispatcher's table back."""

from __future__ import annotations

from aiohttp import web

from .constants import API_PREFIX
from .core import Core
from .event_query import get_event, list_events, parse_query
from .http_errors import json_response


class EventRoutes:
    """The query handlers; each request asks the core for the store afresh (reloads replace it)."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def list(self, request: web.Request) -> web.Response:
        query = parse_query(request.query.items())  # 400 before the store is even looked at
        events = await list_events(self.core.event_store(), query)
        return json_response({"events": events})

    async def show(self, request: web.Request) -> web.Response:
        event = await get_event(self.core.event_store(), request.match_info["id"])
        return json_response({"event": event})


def routes(core: Core) -> list[web.RouteDef]:
    handlers = EventRoutes(core)
    return [web.get(f"{API_PREFIX}/events", handlers.list),
            web.get(f"{API_PREFIX}/events/{{id}}", handlers.show)]
