"""Where the daemon's time goes under (e): py-spy samples of the real daemon, by part.

    .venv/bin/python bench/loop_share.py [--rate 20000] [--seconds 8]

The daemon runs with ``database`` and ``message`` (json, to the bench queue), pinned to core 0,
while bench/loadgen.py posts 100-record batches at ``--rate`` events/s from core 1. py-spy
samples every thread for ``--seconds`` in the middle of the load; each sample is put in one part
by the frames on its stack. Needs root (py-spy attaches to the process) and the local RabbitMQ.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import run as bench

# (part, test on one sample: its thread, then its frames, root first); the first that matches
# takes the sample. SQLite's threads are named after their file (dispatchd.sqlite).
PARTS: list[tuple[str, Any]] = [
    ("SQLite thread: the spool", lambda s: "sqlite:spool" in s[0]),
    ("SQLite thread: the database dispatcher", lambda s: "sqlite:" in s[0]),
    ("other threads", lambda s: "MainThread" not in s[0]),
    ("loop: message worker (read, build, write)", lambda s: any("_pipeline" in f for f in s)),
    ("loop: database worker (read, build rows)", lambda s: any("Worker." in f for f in s)),
    ("loop: AMQP frames in (confirms)", lambda s: any("aiormq" in f for f in s)),
    ("loop: HTTP ingest (parse, validate, answer)", lambda s: any(
        "RequestHandler" in f or "web_protocol" in f for f in s)),
    ("loop: spool (commits, wake-ups)", lambda s: any("Spool." in f for f in s)),
    ("loop: waiting for I/O (epoll)", lambda s: "select" in s[-1]),
]


def part(stack: list[str]) -> str:
    return next((name for name, test in PARTS if test(stack)), "loop: the rest")


def sample(pid: int, seconds: float, out: Path) -> None:
    spy = str(Path(bench.PYTHON).parent / "py-spy")
    subprocess.run([spy, "record", "-p", str(pid), "-d", f"{seconds:g}", "-r", "200", "-f", "raw",
                    "-o", str(out), "--nonblocking", "--threads"], capture_output=True, check=True)


def shares(raw: Path) -> dict[str, float]:
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        counts[part(stack.split(";"))] += int(n)
    total = sum(counts.values())
    return {name: counts[name] / total for name, _ in [*PARTS, ("loop: the rest", None)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20_000, help="events/s, in 100-record batches")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        body, per = bench.bodies(tmp)["batch"]
        bench.purge_queue()
        with bench.dispatchd(["database", "message"]) as (url, _, pid):
            result: dict[str, Any] = {}
            load = threading.Thread(target=lambda: result.update(bench.fixed_rate(
                url, body, args.rate / per, args.seconds + 4, tolerate=True)))
            load.start()
            time.sleep(2)
            sample(pid, args.seconds, tmp / "samples.txt")
            load.join()
            delivered = {n: d["delivered"] for n, d in bench.status(url).items()}
        bench.purge_queue()
        figures = shares(tmp / "samples.txt")
    print(f"offered {args.rate:,.0f} events/s; accepted {result['ok'] * per / result['seconds']:,.0f}"
          f"/s; delivered in all: {json.dumps(delivered)}\n")
    print("| part | share of samples |\n|---|---:|")
    for name, share in figures.items():
        print(f"| {name} | {share:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
