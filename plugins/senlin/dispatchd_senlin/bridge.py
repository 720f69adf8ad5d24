"""Senlin's ``event_dispatchers = dispatchd``: each event to dispatchd, never holding the engine.

Senlin creates the dispatcher once (stevedore, ``invoke_on_load``) and calls ``dump`` on the
engine's green thread for every event. ``dump`` builds the record there, while the action still
holds the values of the moment, and queues it; a background thread sends the queue in batches.
"""

from __future__ import annotations

import atexit
import json
from typing import Any

from oslo_config import cfg
from senlin.events import base

from dispatchd_senlin import options, records
from dispatchd_senlin.client import Client
from dispatchd_senlin.sender import Sender, Settings


class DispatchdEvent(base.EventBackend):
    """An event backend that POSTs Senlin's events to dispatchd's ``/v1/events``."""

    def __init__(self, conf: cfg.ConfigOpts | None = None) -> None:
        conf = cfg.CONF if conf is None else conf
        options.register_opts(conf)
        group = conf.dispatchd
        client = Client(group.url, token=group.token, timeout=group.timeout,
                        ca_file=group.ca_file)
        self.sender = Sender(client, Settings(
            max_queue=group.max_queue, batch_size=group.batch_size,
            flush_timeout=group.flush_timeout, backoff_initial=group.backoff_initial,
            backoff_max=max(group.backoff_max, group.backoff_initial),
        ))
        atexit.register(self.close)

    def dump(self, level: int, action: Any, **kwargs: Any) -> None:
        """Queue the event (Senlin's ``dump(level, action, phase=, reason=, timestamp=)``)."""
        try:
            record = records.record_of(level, action, **kwargs)
            # allow_nan=False: a NaN would make the whole batch invalid JSON; better one drop here.
            encoded = json.dumps(record, default=str, allow_nan=False,
                                 separators=(",", ":")).encode("utf-8")
        except Exception as exc:
            # Raising would stop Senlin's map_method before the dispatchers listed after this one.
            self.sender.count_error(exc)
            return
        self.sender.put(encoded)

    def stats(self) -> dict[str, int]:
        """queued, sent, dropped_queue_full, dropped_rejected, dropped_error, retries,
        pending and in_flight."""
        return self.sender.stats()

    def close(self) -> dict[str, int]:
        """Flush within ``[dispatchd] flush_timeout`` and log the counters (run at exit)."""
        return self.sender.close()
