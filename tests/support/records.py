"""Valid API v1 records as JSON data."""

from __future__ import annotations

from typing import Any


def record(**overrides: Any) -> dict[str, Any]:
    """A valid API v1 record as JSON data; keys given replace the defaults."""
    body: dict[str, Any] = {
        "level": "INFO",
        "phase": "end",
        "reason": "Cluster scaled out",
        "extra": {"count": 2},
        "action": {
            "id": "a-1",
            "name": "scale_out_web",
            "action": "CLUSTER_SCALE_OUT",
            "cause": "RPC Request",
            "status": "SUCCEEDED",
            "user": "user-1",
            "project": "project-1",
            "inputs": {"count": 2},
            "entity": {"type": "CLUSTER", "id": "c-1", "name": "web", "status": "ACTIVE"},
        },
    }
    body.update(overrides)
    return body
