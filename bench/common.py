"""What every benchmark script shares: ports, readiness, process memory, the machine line."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DISPATCHD = Path(sys.executable).parent / "dispatchd"
MB = 1024 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_ready(url: str, proc: subprocess.Popen[bytes] | None = None,
                     path: str = "/readyz", timeout: float = 30.0, log: Path | None = None) -> None:
    """Poll ``url + path`` until it answers 200; fail early if ``proc`` exits (showing ``log``)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                output = log.read_text() if log is not None and log.exists() else ""
                raise RuntimeError(f"server exited with {proc.returncode} before it was ready\n"
                                   + output)
            try:
                async with session.get(url + path) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{url}{path} did not answer 200 within {timeout:g}s")


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in bytes, from /proc."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads (live or ended), from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name may hold spaces and parentheses: the fields start after the last ")".
        fields = stat.read().rpartition(")")[2].split()
    # fields[0] is field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class CpuMeter:
    """A process's CPU time from when the meter is made: per event, and in cores (CPU / wall)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu, self.wall = cpu_seconds(pid), time.monotonic()

    def seconds(self) -> float:
        return cpu_seconds(self.pid) - self.cpu

    def us_per_event(self, events: float) -> float:
        return self.seconds() / events * 1e6 if events else float("nan")

    def cores(self) -> float:
        return self.seconds() / (time.monotonic() - self.wall)


def pinned(core: int | None, argv: Sequence[str]) -> list[str]:
    """``argv`` run on one core with taskset, when there is such a core and taskset exists."""
    if core is None or core >= (os.cpu_count() or 1):
        return list(argv)
    return ["taskset", "-c", str(core), *argv]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def machine() -> str:
    """One line saying where and when a figure was measured."""
    return (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
            f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")


def aio_pika_message(out: Any) -> Any:
    """The ``aio_pika.Message`` of a message dispatcher's ``Outgoing``: what raw aio-pika sends."""
    import aio_pika

    p = out.properties
    return aio_pika.Message(
        out.body, content_type=p.content_type, content_encoding=p.content_encoding,
        delivery_mode=p.delivery_mode, message_id=p.message_id, timestamp=p.timestamp,
        type=p.message_type, app_id=p.app_id, headers=p.headers,
    )
