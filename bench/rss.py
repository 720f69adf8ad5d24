"""Memory with a large on-disk backlog: peak RSS of the real daemon holding N undelivered events.

    .venv/bin/python bench/rss.py [--events 1000000] [--concurrency 4] [--keep]

Starts ``dispatchd serve`` (the console script next to ``sys.executable``) on a temp dir with two
dispatchers: ``database`` (delivers) and the test plugin ``flaky`` (tests/testplugins, on the
subprocess's PYTHONPATH) whose ``fail_file`` exists, so it never delivers and, with a huge
``max_attempts``, never dead-letters: its cursor stays put and the whole ingest stays in the spool.
POSTs N events in 1000-record batches over a few connections, samples VmRSS / VmHWM of the daemon
from /proc while it does, waits for ``database`` to catch up, checks through GET /v1/dispatchers
that ``flaky``'s backlog is exactly N, stops the daemon with SIGTERM (must exit 0 within its grace)
and writes the figures to bench/results/rss.md. A figure, not a timed test: the exit status only
says whether the checks held (1) and, separately, whether the peak exceeded ``--limit-mb`` (3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from common import free_port, wait_ready

ROOT = Path(__file__).resolve().parent.parent
TESTPLUGINS = ROOT / "tests" / "testplugins"
DISPATCHD = Path(sys.executable).parent / "dispatchd"
RESULTS = ROOT / "bench" / "results" / "rss.md"
BATCH = 1000
MB = 1024 * 1024


def config_text(tmp: Path, port: int, events: int, grace: float) -> str:
    return f"""
[server]
host = "127.0.0.1"
port = {port}
max_batch = {BATCH}
shutdown_timeout = {grace}

[spool]
path = "{tmp}/spool.db"
max_events = {events + 100 * BATCH}

[dispatch]
enabled = ["database", "flaky"]
level = "DEBUG"
max_attempts = 1000000000
backoff_initial = 0.5
backoff_max = 2.0
timeout = 5.0

[dispatchers.database]
url = "sqlite:///{tmp}/events.db"

[dispatchers.flaky]
path = "{tmp}/flaky.jsonl"
fail_file = "{tmp}/flaky.down"
"""


def record() -> dict[str, Any]:
    """A realistic record (the shape of tests/conftest.py's); the daemon generates the ids."""
    return {
        "level": "INFO", "phase": "end", "reason": "Cluster scaled out", "extra": {"count": 2},
        "action": {
            "id": "5b3f7e0c-1f0e-4a63-9d1e-0c6f3a9f2b11", "name": "scale_out_web",
            "action": "CLUSTER_SCALE_OUT", "cause": "RPC Request", "status": "SUCCEEDED",
            "user": "user-1", "project": "project-1", "inputs": {"count": 2},
            "entity": {"type": "CLUSTER", "id": "c-1", "name": "web", "status": "ACTIVE"},
        },
    }


# -- the daemon's memory -------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak resident set) of ``pid``, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


@dataclass
class Sampler:
    pid: int
    interval: float = 0.2
    max_rss: int = 0
    last: dict[str, int] = field(default_factory=dict)

    def sample(self) -> dict[str, int]:
        self.last = proc_status(self.pid)
        self.max_rss = max(self.max_rss, self.last["VmRSS"])
        return self.last

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except TimeoutError:
                pass


# -- ingest --------------------------------------------------------------------------------------


async def ingest(url: str, events: int, concurrency: int, sampler: Sampler) -> float:
    """POST ``events`` records in batches of ``BATCH``; returns the seconds it took."""
    full = json.dumps([record()] * BATCH, separators=(",", ":")).encode()
    sent = accepted = 0
    next_report = 100_000
    started = time.perf_counter()
    headers = {"Content-Type": "application/json"}

    async def poster(session: aiohttp.ClientSession) -> None:
        nonlocal sent, accepted, next_report
        while sent < events:
            n = min(BATCH, events - sent)
            sent += n
            body = full if n == BATCH else json.dumps([record()] * n).encode()
            while True:
                async with session.post(url + "/v1/events", data=body, headers=headers) as resp:
                    answer = await resp.json()
                    if resp.status == 202 and answer["accepted"] == n:
                        break
                    if resp.status == 503:  # spool full: should not happen with max_events above N
                        await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
                        continue
                    raise RuntimeError(f"POST answered {resp.status}: {answer}")
            accepted += n
            done = accepted
            if done >= next_report:
                next_report += 100_000
                st = sampler.sample()
                elapsed = time.perf_counter() - started
                print(f"  {done:>9,} events  {elapsed:6.1f}s  {done / elapsed:8,.0f} ev/s  "
                      f"RSS {st['VmRSS'] / MB:6.1f} MB  HWM {st['VmHWM'] / MB:6.1f} MB", flush=True)

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(poster(session) for _ in range(concurrency)))
    return time.perf_counter() - started


async def dispatchers(session: aiohttp.ClientSession, url: str) -> dict[str, dict[str, Any]]:
    async with session.get(url + "/v1/dispatchers") as resp:
        body = await resp.json()
    return {d["name"]: d for d in body["dispatchers"]}


def file_size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


# -- the run -------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, Any], list[str]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = tmp / "dispatchd.toml"
    config.write_text(config_text(tmp, port, args.events, args.grace))
    (tmp / "flaky.down").touch()  # while it exists, every flaky dump raises
    log = tmp / "daemon.log"
    pythonpath = os.pathsep.join(filter(None, [str(TESTPLUGINS), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath}
    problems: list[str] = []
    figures: dict[str, Any] = {"events": args.events}

    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(DISPATCHD), "--log-level", "WARNING", "serve", "-c", str(config)],
            stdout=out, stderr=out, env=env,
        )
    try:
        await wait_ready(url, proc, log=log)
        sampler = Sampler(proc.pid)
        figures["rss_start"] = sampler.sample()["VmRSS"]
        print(f"dispatchd pid {proc.pid} ready on {url}; RSS {figures['rss_start'] / MB:.1f} MB; "
              f"posting {args.events:,} events, {BATCH} per request, {args.concurrency} connections",
              flush=True)

        stop = asyncio.Event()
        sampling = asyncio.create_task(sampler.run(stop))
        elapsed = await ingest(url, args.events, args.concurrency, sampler)
        after_ingest = sampler.sample()
        figures["ingest_s"] = elapsed
        figures["ingest_rate"] = args.events / elapsed
        figures["hwm_ingest"] = after_ingest["VmHWM"]
        figures["max_rss_ingest"] = sampler.max_rss
        figures["rss_after_ingest"] = after_ingest["VmRSS"]
        print(f"ingest done in {elapsed:.1f}s ({figures['ingest_rate']:,.0f} ev/s); "
              f"RSS {after_ingest['VmRSS'] / MB:.1f} MB, HWM {after_ingest['VmHWM'] / MB:.1f} MB",
              flush=True)

        # Let the database dispatcher catch up: the daemon then holds the backlog at rest.
        async with aiohttp.ClientSession() as session:
            waited = time.perf_counter()
            while True:
                status = await dispatchers(session, url)
                if status["database"]["backlog"] == 0:
                    break
                if time.perf_counter() - waited > args.drain_timeout:
                    problems.append(f"database still has a backlog of {status['database']['backlog']}"
                                    f" after {args.drain_timeout:g}s")
                    break
                await asyncio.sleep(1.0)
            figures["database_catch_up_s"] = time.perf_counter() - waited
            await asyncio.sleep(args.settle)
            status = await dispatchers(session, url)
        stop.set()
        await sampling
        end = sampler.sample()
        figures["rss_end"] = end["VmRSS"]
        figures["hwm_end"] = end["VmHWM"]
        figures["max_rss"] = sampler.max_rss
        flaky, database = status["flaky"], status["database"]
        figures["backlog"] = flaky["backlog"]
        figures["flaky"] = {k: flaky.get(k) for k in ("state", "backlog", "delivered", "failed",
                                                      "dead_lettered", "dead_letters")}
        figures["database"] = {k: database.get(k) for k in ("state", "backlog", "delivered")}
        figures["spool_bytes"] = file_size(tmp / "spool.db")
        figures["events_db_bytes"] = file_size(tmp / "events.db")
        if flaky["backlog"] != args.events:
            problems.append(f"flaky backlog is {flaky['backlog']}, expected {args.events}")
        if flaky.get("dead_letters") or flaky.get("dead_lettered"):
            problems.append(f"flaky dead-lettered records: {flaky}")
        if database.get("delivered") != args.events:
            problems.append(f"database delivered {database.get('delivered')} of {args.events}")

        proc.send_signal(signal.SIGTERM)
        stopped = time.perf_counter()
        try:
            code = proc.wait(args.grace + 5.0)
            figures["exit_code"] = code
            figures["stop_s"] = time.perf_counter() - stopped
            if code != 0:
                problems.append(f"dispatchd exited {code} on SIGTERM")
        except subprocess.TimeoutExpired:
            problems.append(f"dispatchd still running {args.grace + 5.0:g}s after SIGTERM")
            figures["exit_code"] = None
        return figures, problems
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def table(f: dict[str, Any]) -> str:
    rows = [
        ("events posted", f"{f['events']:,}"),
        ("flaky backlog (GET /v1/dispatchers)", f"{f['backlog']:,}"),
        ("spool.db size (+ -wal)", f"{f['spool_bytes'] / MB:,.0f} MB"),
        ("RSS after start", f"{f['rss_start'] / MB:.1f} MB"),
        ("peak RSS during ingest (VmHWM)", f"{f['hwm_ingest'] / MB:.1f} MB"),
        ("RSS right after ingest", f"{f['rss_after_ingest'] / MB:.1f} MB"),
        ("RSS at the end (database caught up)", f"{f['rss_end'] / MB:.1f} MB"),
        ("peak RSS over the whole run (VmHWM)", f"{f['hwm_end'] / MB:.1f} MB"),
        ("ingest", f"{f['ingest_rate']:,.0f} events/s ({f['ingest_s']:.1f} s)"),
        ("database dispatcher caught up", f"{f['database_catch_up_s']:.1f} s after ingest"),
        ("SIGTERM -> exit", f"code {f['exit_code']} in {f.get('stop_s', float('nan')):.1f} s"),
    ]
    lines = ["| measure | value |", "|---|---:|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def report(args: argparse.Namespace, f: dict[str, Any], problems: list[str]) -> str:
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    machine = (f"{os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))}), "
               f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
    limit = args.limit_mb * MB
    verdict = "under" if f["hwm_end"] < limit else "OVER"
    return "\n".join([
        f"# bench/rss.py — {date}, {machine}",
        "",
        f"`.venv/bin/python bench/rss.py --events {args.events} --concurrency {args.concurrency}`",
        "",
        f"The real daemon with `database` + a never-delivering `flaky` dispatcher, "
        f"{args.events:,} events POSTed in batches of {BATCH} over {args.concurrency} connections; "
        f"RSS from /proc/<pid>/status (VmRSS, VmHWM = peak).",
        "",
        table(f),
        "",
        f"Peak RSS {f['hwm_end'] / MB:.1f} MB: {verdict} the {args.limit_mb} MB bound. "
        f"Checks: {'all held' if not problems else '; '.join(problems)}.",
        "",
        f"flaky: {json.dumps(f['flaky'])}; database: {json.dumps(f['database'])}; "
        f"events.db {f['events_db_bytes'] / MB:,.0f} MB",
        "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=4, help="HTTP connections")
    parser.add_argument("--grace", type=float, default=10.0, help="server.shutdown_timeout")
    parser.add_argument("--drain-timeout", type=float, default=1800.0,
                        help="seconds to wait for the database dispatcher to catch up")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds idle before 'end'")
    parser.add_argument("--limit-mb", type=int, default=200)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (daemon.log)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dispatchd-rss-"))
    try:
        figures, problems = asyncio.run(run(args, tmp))
        text = report(args, figures, problems)
        print()
        print(text)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"written to {args.output}")
        if problems:
            print("daemon log tail:\n" + "\n".join(
                (tmp / "daemon.log").read_text(errors="replace").splitlines()[-20:]))
            return 1
        return 3 if figures["hwm_end"] >= args.limit_mb * MB else 0
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    sys.exit(main())
