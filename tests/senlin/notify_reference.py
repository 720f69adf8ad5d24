"""Senlin's own ``MessageEvent.dump`` through oslo.messaging, and the records of the same events.

Runs in a Senlin environment. stdin: ``{"url": transport_url or null, "host": ..., "events":
[{"level": 20, "spec": {...}, "phase": "end", "reason": "...", "timestamp": "..."}]}`` (specs as
``objects.action_of`` takes them). With a ``url``, each event is sent as a default oslo.messaging
deployment of Senlin sends it (driver ``messagingv2``, nothing else tuned); without one nothing is
sent. stdout: ``{"records": [...], "errors": [...]}``: each event's dispatchd record
(``dispatchd_senlin.records.record_of``) and what Senlin's dump raised for it, if anything.
"""

from __future__ import annotations

import datetime
import json
import sys
import tempfile

import objects


def configure(url: str | None, host: str) -> None:
    """Senlin's options from a config file, as an engine reads them."""
    import senlin.conf  # noqa: F401  (registers Senlin's options)
    from oslo_config import cfg

    lines = [f"[DEFAULT]\nhost = {host}\n"]
    if url:
        lines.append(f"transport_url = {url}\n[oslo_messaging_notifications]\ndriver = messagingv2\n")
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as conf:
        conf.write("".join(lines))
    cfg.CONF(["--config-file", conf.name], project="senlin", default_config_files=[])


def main() -> None:
    args = json.load(sys.stdin)
    configure(args.get("url"), args.get("host", "engine-1"))
    from dispatchd_senlin.records import record_of
    from senlin.common import messaging
    from senlin.events import message

    if args.get("url"):
        messaging.setup()
    records, errors = [], []
    for event in args["events"]:
        action = objects.action_of(event["spec"])
        kwargs = {key: event[key] for key in ("phase", "reason") if event.get(key) is not None}
        timestamp = datetime.datetime.fromisoformat(event["timestamp"]) if "timestamp" in event \
            else datetime.datetime.now(datetime.UTC)
        records.append(record_of(event["level"], action, timestamp=timestamp, **kwargs))
        error = None
        if args.get("url"):
            try:
                message.MessageEvent.dump(event["level"], action, timestamp=timestamp, **kwargs)
            except Exception as exc:  # what Senlin's event._dump would log, dropping the event
                error = f"{type(exc).__name__}: {exc}"
        errors.append(error)
    if args.get("url"):
        messaging.cleanup()  # closes the connection: every notification has been written
    json.dump({"records": records, "errors": errors}, sys.stdout, default=str)


if __name__ == "__main__":
    main()
