"""Transitional: moved to ``tests.support.amqp``; kept until the modules being edited elsewhere
have switched their imports."""

from .support.amqp import RABBIT_URL, TcpProxy, bound_queue, require_service

__all__ = ["RABBIT_URL", "TcpProxy", "bound_queue", "require_service"]
