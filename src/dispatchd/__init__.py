"""dispatchd: a durable asyncio event-dispatch daemon with Senlin's dispatcher contract."""

from __future__ import annotations

from .backend import EventBackend
from .errors import Unavailable
from .models import Action, Entity, Record

__all__ = ["Action", "Entity", "EventBackend", "Record", "Unavailable", "__version__"]
__version__ = "0.1.0"
