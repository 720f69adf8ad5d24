"""The OpenAPI document the daemon serves at ``GET /v1/openapi.json``."""

from __future__ import annotations

from typing import Any

from . import __version__
from .models import Record


def document() -> dict[str, Any]:
    """OpenAPI 3.1 for the HTTP surface; the record schema comes from the pydantic model."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "dispatchd", "version": __version__},
        "paths": {},
        "components": {"schemas": {"Record": Record.model_json_schema()}},
    }
