"""``dispatchd serve`` with its ingest handler cut short, to show what each stage of a POST costs.

    python bench/stages.py read     serve -c CONFIG   # dispatchd's app: read the body, answer 202
    python bench/stages.py validate serve -c CONFIG   # ... and validate, serialise, answer the ids

Everything else (middlewares, routes, loop, GC settings, start-up) is the real daemon's. The next
stages need no patch: the real daemon with no dispatchers enabled (+ the spool's commit), then
the default config (+ the database dispatcher). bench/run.py runs all four as rows (s).
"""

from __future__ import annotations

import sys
from typing import Any

from aiohttp import web

from dispatchd import api, cli
from dispatchd.decode import decode_records

try:
    from dispatchd.models import spool_json
except ImportError:  # a baseline from before it (bench/run.py --baseline-commit)
    def spool_json(record: Any) -> str:
        return str(record.model_dump_json(exclude_none=True))

ANSWER = b'{"accepted":1,"ids":["0193a0b2-0000-7000-8000-000000000000"]}'


async def read_only(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, status=202, content_type="application/json")


async def validate_only(request: web.Request) -> web.Response:
    """``api.post_events`` up to, not including, ``core.ingest``."""
    content_type = api._media_type(request)
    api._wait_timeout(request)
    server = request.app[api.CONTEXT].server
    body = await api._read_body(request, server.max_body_bytes, 10.0)
    records = decode_records(body, content_type, server.max_batch)
    for record in records:
        spool_json(record)  # what ingest hands the spool
    return api.json_response({"accepted": len(records), "ids": [r.id for r in records]}, status=202)


STAGES = {"read": read_only, "validate": validate_only}

if __name__ == "__main__":
    api.post_events = STAGES[sys.argv[1]]  # make_app looks the handler up when the daemon starts
    sys.exit(cli.main(sys.argv[2:]))
