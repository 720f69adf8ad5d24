"""Fixed names and defaults shared across dispatchd."""

from __future__ import annotations

ENTRY_POINT_GROUP = "dispatchd.dispatchers"
CONFIG_ENV = "DISPATCHD_CONFIG"
DEFAULT_CONFIG_PATH = "config/dispatchd.toml"

API_PREFIX = "/v1"
NDJSON = "application/x-ndjson"
JSON = "application/json"

# Senlin's event levels (senlin.common.consts.EVENT_LEVELS).
LEVELS: dict[str, int] = {
    "DEBUG": 10,
    "INFO": 20,
    "WARN": 30,
    "WARNING": 30,
    "ERROR": 40,
    "CRITICAL": 50,
}
LEVEL_MIN = 10
LEVEL_MAX = 50

# Senlin's action causes (senlin.common.consts.CAUSE_*).
CAUSE_DERIVED = "Derived Action"
CAUSE_DERIVED_LCH = "Derived Action with Lifecycle Hook"

OPERATION_ACTIONS = frozenset({"CLUSTER_OPERATION", "NODE_OPERATION"})

# Seconds a client is told to wait when the spool is full or the daemon is stopping.
RETRY_AFTER_FULL = 1
RETRY_AFTER_STOPPING = 5
