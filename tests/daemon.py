"""Transitional: moved to ``tests.support.daemon``; kept until the modules being edited elsewhere
have switched their imports."""

from .support.daemon import DISPATCHD, Daemon, eventually, free_port, post

__all__ = ["DISPATCHD", "Daemon", "eventually", "free_port", "post"]
