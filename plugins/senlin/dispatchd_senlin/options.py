"""The bridge's options, group ``[dispatchd]`` of senlin.conf; ``list_opts`` for the generator."""

from __future__ import annotations

import copy
from typing import Any

from oslo_config import cfg

GROUP = cfg.OptGroup(
    "dispatchd", title="dispatchd bridge",
    help="Where Senlin's event_dispatchers = dispatchd sends events, and how it buffers them.",
)

OPTS = [
    cfg.URIOpt("url", default="http://127.0.0.1:8080", schemes=["http", "https"],
               help="dispatchd's base URL; events are POSTed to <url>/v1/events."),
    cfg.StrOpt("token", secret=True,
               help="Bearer token sent as 'Authorization: Bearer <token>' (dispatchd's "
                    "server.auth_tokens); none is sent when unset."),
    cfg.StrOpt("ca_file",
               help="CA bundle to verify an https url with; the system's CAs when unset."),
    cfg.FloatOpt("timeout", default=10.0, min=0.1,
                 help="Seconds for one HTTP request (connect, send, answer)."),
    cfg.IntOpt("max_queue", default=10000, min=1,
               help="Events held in memory while waiting to be sent; when full, new events are "
                    "dropped, counted and logged."),
    cfg.IntOpt("batch_size", default=100, min=1,
               help="Events per POST at most; a batch dispatchd finds too large (server.max_batch, "
                    "server.max_body_bytes) is split and sent again."),
    cfg.FloatOpt("flush_timeout", default=10.0, min=0.0,
                 help="Seconds the process waits at exit for queued events to be sent."),
    cfg.FloatOpt("backoff_initial", default=0.5, min=0.01,
                 help="Seconds before the first retry while dispatchd is unreachable or busy."),
    cfg.FloatOpt("backoff_max", default=30.0, min=0.01,
                 help="Longest wait between retries (doubling from backoff_initial)."),
]


def register_opts(conf: Any) -> None:
    """Register ``[dispatchd]`` on ``conf``; registering again is a no-op."""
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    """Entry point ``oslo.config.opts``: ``oslo-config-generator --namespace dispatchd_senlin``."""
    return [(GROUP, copy.deepcopy(OPTS))]
