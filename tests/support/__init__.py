"""Helpers shared by the test modules; fixtures stay in ``tests/conftest.py``."""

from __future__ import annotations

from pathlib import Path

TESTPLUGINS = Path(__file__).parent.parent / "testplugins"
"""Misbehaving dispatchers, registered by a dist-info here; put on ``PYTHONPATH`` to find them."""
