"""dispatchd: a durable asyncio event-dispatch daemon with Senlin's dispatcher contract.

What a dispatcher plugin may use is exported here; ``dispatchd.sqlite.Connection`` is the one
documented helper module besides (docs/plugins.md).
"""

from __future__ import annotations

from .backend import EventBackend
from .errors import Unavailable
from .models import Action, Context, Derived, Entity, Record, level_name, parse_level

__all__ = [
    "Action",
    "Context",
    "Derived",
    "Entity",
    "EventBackend",
    "Record",
    "Unavailable",
    "__version__",
    "level_name",
    "parse_level",
]
__version__ = "0.1.0"
