"""One snapshot of the daemon's state: what the API, the metrics, the CLI and the shutdown
line all read, so that each figure is computed in one place."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

DISPATCHER_STATES = ("starting", "running", "retrying", "failed", "draining", "stopped")


@dataclass(frozen=True)
class DispatcherStatus:
    """One dispatcher; counters are cumulative since the daemon started, across restarts."""

    name: str
    enabled: bool
    state: str
    backlog: int = 0
    delivered: int = 0
    skipped: int = 0
    failed: int = 0
    dead_lettered: int = 0  # since start
    dead_letters: int = 0  # stored now
    last_error: str | None = None
    lag_seconds: float = 0.0  # age of the oldest record it still owes
    report: dict[str, str | int | float | bool] = field(default_factory=dict)  # its own facts


@dataclass(frozen=True)
class SpoolStatus:
    path: str
    open: bool
    backlog: int
    capacity: int
    full: bool
    commits: int
    quarantined: int
    free_bytes: int | None
    reserve_bytes: int
    low_space: bool


@dataclass(frozen=True)
class ConfigStatus:
    generation: int
    path: str | None
    loaded_at: str
    last_reload_error: str | None
    restart_required: tuple[str, ...]
    enabled: tuple[str, ...]


@dataclass(frozen=True)
class Snapshot:
    instance: str  # server.instance: which replica this is
    accepted: int
    stopping: bool
    spool: SpoolStatus
    config: ConfigStatus
    dispatchers: tuple[DispatcherStatus, ...]

    def readiness_problems(self) -> list[str]:
        return readiness_problems(self.stopping, self.spool)

    def totals(self) -> dict[str, int]:
        keys = ("delivered", "failed", "dead_lettered")
        return {key: sum(getattr(d, key) for d in self.dispatchers) for key in keys}

    def as_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "accepted": self.accepted,
            "stopping": self.stopping,
            "spool": asdict(self.spool),
            "config": {**asdict(self.config), "restart_required": list(self.config.restart_required),
                       "enabled": list(self.config.enabled)},
            "dispatchers": [asdict(d) for d in self.dispatchers],
        }


def readiness_problems(stopping: bool, spool: SpoolStatus) -> list[str]:
    """Why the daemon should not get traffic now; empty when ready."""
    problems = []
    if stopping:
        problems.append("shutting down")
    if not spool.open:
        problems.append("spool not open")
    elif spool.full:
        problems.append(f"spool full ({spool.backlog} of {spool.capacity})")
    if spool.low_space:
        problems.append(f"spool filesystem low on space ({spool.free_bytes} bytes free, "
                        f"reserve {spool.reserve_bytes})")
    return problems
