"""A default oslo.messaging listener of Senlin's notifications, reading them with Senlin's objects.

Runs in a Senlin environment. stdin: ``{"url": transport_url, "count": n, "ready": path,
"timeout": seconds}``. Listens as a consumer of a default deployment does: control exchange
``senlin`` (``set_transport_defaults('senlin')``, as Senlin itself), ``Target(topic=
'versioned_notifications')``, every oslo default. Touches ``ready`` once its queues are bound,
stops after ``count`` notifications (or ``timeout``). stdout: ``{"received": [...]}``, each with
the priority, context, publisher, event type, metadata, the raw payload, and ``fields``: every
field of the payload read back through Senlin's payload classes (``obj_from_primitive``, then
``getattr`` of each field, nested objects too) or ``errors`` naming what could not be read.
"""

from __future__ import annotations

import json
import pathlib
import sys
import threading
from typing import Any

PRIORITIES = ("audit", "critical", "error", "warn", "info", "debug", "sample")


def register_readers() -> None:
    """Make Senlin's payload classes readable with ``obj_from_primitive``.

    Senlin defines them with ``register_if(False)`` (it only ever writes them), and the two
    top-level payloads need their entity and action to be constructed; a reader registers them
    and gives those two a no-argument constructor, nothing else.
    """
    from senlin.objects import base, notification

    for cls in (notification.ClusterPayload, notification.NodePayload,
                notification.ActionPayload, notification.ExceptionPayload):
        base.SenlinObjectRegistry.register(cls)
    for cls in (notification.ClusterActionPayload, notification.NodeActionPayload):

        def __init__(self: Any, **kwargs: Any) -> None:
            notification.NotificationObject.__init__(self, **kwargs)

        base.SenlinObjectRegistry.register(type(cls.__name__, (cls,), {"__init__": __init__}))


def read(primitive: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Every field of a payload primitive as Senlin's objects read it, and what failed."""
    from senlin.objects import base

    try:
        obj = base.SenlinObject.obj_from_primitive(primitive)
    except Exception as exc:
        return {}, [f"obj_from_primitive: {type(exc).__name__}: {exc}"]
    return _fields(obj, "")


def _fields(obj: Any, prefix: str) -> tuple[dict[str, Any], list[str]]:
    from oslo_versionedobjects import base as ovo

    values: dict[str, Any] = {}
    errors: list[str] = []
    for name in obj.fields:
        try:
            value = getattr(obj, name)
        except Exception as exc:  # NotImplementedError: the field was not in the primitive
            errors.append(f"{prefix}{name}: {type(exc).__name__}: {exc}")
            continue
        if isinstance(value, ovo.VersionedObject):
            value, nested = _fields(value, f"{prefix}{name}.")
            errors.extend(nested)
        values[name] = value
    return values, errors


def main() -> None:
    args = json.load(sys.stdin)
    import oslo_messaging
    from oslo_config import cfg

    register_readers()
    oslo_messaging.set_transport_defaults("senlin")
    conf = cfg.ConfigOpts()
    conf([], project="senlin-listener", default_config_files=[])
    transport = oslo_messaging.get_notification_transport(conf, url=args["url"])
    received: list[dict[str, Any]] = []
    done = threading.Event()

    class Endpoint:
        def _handle(self, priority: str, ctxt: Any, publisher_id: str, event_type: str,
                    payload: Any, metadata: Any) -> None:
            fields, errors = read(payload)
            context_error = None
            try:
                from senlin.common import context

                context.RequestContext.from_dict(dict(ctxt))
            except Exception as exc:
                context_error = f"{type(exc).__name__}: {exc}"
            received.append({
                "priority": priority, "ctxt": ctxt, "publisher_id": publisher_id,
                "event_type": event_type, "metadata": metadata, "payload": payload,
                "fields": fields, "errors": errors, "context_error": context_error,
            })
            if len(received) >= args["count"]:
                done.set()

    for name in PRIORITIES:
        setattr(Endpoint, name, lambda self, *a, _p=name: self._handle(_p, *a))

    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic="versioned_notifications")], [Endpoint()],
        executor="threading",
    )
    listener.start()  # declares and binds its queues before it returns
    pathlib.Path(args["ready"]).touch()
    done.wait(args.get("timeout", 60))
    listener.stop()
    listener.wait()
    transport.cleanup()
    json.dump({"received": received}, sys.stdout, default=str)


if __name__ == "__main__":
    main()
