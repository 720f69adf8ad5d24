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

# The query API over Senlin's event table (GET /v1/events): Senlin's filters and sort keys
# (senlin.common.consts EVENT_ATTRS filters, EVENT_SORT_KEYS), plus dispatchd's own.
EVENT_STORE = "database"  # the dispatcher the query API reads from
EVENT_FILTERS = ("oname", "otype", "oid", "cluster_id", "action", "level", "project")
EVENT_SORT_KEYS = ("timestamp", "level", "otype", "oname", "action", "status", "oid", "cluster_id")
EVENT_DEFAULT_SORT = "timestamp:desc"
EVENT_LIMIT = 100
EVENT_MAX_LIMIT = 1000
EVENT_MAX_VALUES = 100  # values of one repeatable filter
EVENT_MAX_LENGTH = 255  # characters of one filter value: no column holds more
SHORT_ID = 8  # Senlin's short ids: the first 8 characters of the uuid
