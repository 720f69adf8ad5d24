"""``make bench``: dispatchd against its raw ceilings, in one run, reported as ratios.

    python bench/run.py [--seconds 10] [--reps 3] [--only a,b,c,s,d,u,e,p,m,q] [--baseline-commit REV]
                        [--out bench/results/latest.md]

Servers run on core 0 and the load generator (wrk, or bench/loadgen.py for fixed-rate runs) on
core 1. Every figure is the median of ``--reps`` runs; every target is a ratio between figures of
this same run, because this machine is shared and its absolute speed drifts. With (d), the (d)
rows that are cheap to repeat run again against ``--baseline-commit``'s sources. (p) and (m) are
the ``database`` dispatcher on this machine's PostgreSQL and MariaDB, each against its store's
bare upserts; (q), only when asked for, is bench/query.py on the three stores. See
docs/performance.md for what each run means and for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import sqlserver
from baselines import sample
from common import (
    DISPATCHD,
    MB,
    RESULTS,
    ROOT,
    CpuMeter,
    free_port,
    machine,
    median,
    memory,
    percentile,
    pinned,
    wait_ready,
)

from dispatchd.config import ServerConfig

SERVER_CORE, LOAD_CORE = 0, 1
PYTHON = sys.executable
BATCH = 100
CONNECTIONS = 16
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
BENCH_QUEUE = "dispatchd.bench"
STAGES = ROOT / "bench" / "stages.py"
CONSUMER = ROOT / "bench" / "consumer.py"
ROWS = "abcsduepm"  # the default run
OPTIONAL_ROWS = "q"  # only with --only: minutes of filling 1M-row tables
SQL_SERVERS = {"p": "postgresql", "m": "mysql"}
QUERY = ROOT / "bench" / "query.py"
QUERY_P99_MS = 20.0  # issue 14: a filtered first page on 1M rows
# The commit before issue 13's work: its (d) rows run again in the same session, for the ratios.
BASELINE_COMMIT = "eb3d506"
RAW_MESSAGES = 20_000  # published by raw aio-pika, and drained by the message dispatcher
# dispatchd runs on its default event loop, and the baselines it is divided by run on the same one;
# "u" measures dispatchd (and bare aiohttp) on the other loop.
LOOP = ServerConfig().event_loop
OTHER_LOOP = "asyncio" if LOOP == "uvloop" else "uvloop"


@dataclass
class Figure:
    """One line of the table: the medians of one run's repetitions."""

    name: str
    shape: str
    events_per_s: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    lag_p99_ms: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # server user+sys CPU per event, all threads
    extra: dict[str, list[float]] = field(default_factory=dict)
    series: dict[str, list[list[float]]] = field(default_factory=dict)  # one list per repetition

    def add(self, key: str, value: float) -> None:
        self.extra.setdefault(key, []).append(value)

    def get(self, key: str) -> float:
        return median(getattr(self, key) if hasattr(self, key) else self.extra.get(key, []))


# -- load --------------------------------------------------------------------------------------


def bodies(tmp: Path) -> dict[str, tuple[Path, int]]:
    """The request bodies: one record, and an array of ``BATCH`` records."""
    single, batch = tmp / "single.json", tmp / "batch.json"
    single.write_text(json.dumps(sample()))
    batch.write_text(json.dumps([sample(i) for i in range(BATCH)]))
    return {"single": (single, 1), "batch": (batch, BATCH)}


def wrk(url: str, body: Path, seconds: float) -> dict[str, Any]:
    """Closed-loop maximum load: ``CONNECTIONS`` connections, one thread, on the load core."""
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--timeout", "10s",
            "-s", str(ROOT / "bench" / "wrk" / "post.lua"), url + "/v1/events", "--", str(body)]
    out = subprocess.run(pinned(LOAD_CORE, argv), capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    errors = sum(result[k] for k in ("connect_errors", "read_errors", "write_errors",
                                      "status_errors", "timeouts"))
    if errors:
        raise RuntimeError(f"wrk saw {errors} errors against {url}: {result}")
    return result


def fixed_rate(url: str, body: Path, rate: float, seconds: float, accepted: Path | None = None,
               tolerate: bool = False) -> dict[str, Any]:
    """Open-loop load at ``rate`` requests/s from bench/loadgen.py on the load core; refused
    requests fail the run unless ``tolerate``."""
    argv = [PYTHON, str(ROOT / "bench" / "loadgen.py"), url + "/v1/events", str(body),
            "--rate", f"{rate:.3f}", "--seconds", f"{seconds:g}",
            "--connections", str(CONNECTIONS)]
    if accepted is not None:
        argv += ["--accepted", str(accepted)]
    out = subprocess.run(pinned(LOAD_CORE, argv), capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if result["errors"] and not tolerate:
        raise RuntimeError(f"loadgen saw {result['errors']} failed requests: {result}")
    return result


def record_wrk(figure: Figure, result: dict[str, Any], per_request: int,
               meter: CpuMeter | None = None) -> float:
    seconds: float = result["duration_us"] / 1e6
    figure.events_per_s.append(result["requests"] * per_request / seconds)
    figure.p50_ms.append(result["p50_us"] / 1e3)
    figure.p99_ms.append(result["p99_us"] / 1e3)
    if meter is not None:
        record_cpu(figure, meter, result["requests"] * per_request)
    return seconds


def record_cpu(figure: Figure, meter: CpuMeter, events: float) -> None:
    """The server's CPU over the load: per event accepted, and in cores (1.00: its core is full)."""
    figure.cpu_us.append(meter.us_per_event(events))
    figure.add("cpu_cores", meter.cores())


# -- servers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """The dispatchd measured: this tree's (``NOW``), or a commit's src/ run by the same venv."""

    key: str = ""  # appended to a row's key and label: "" or "@<short commit>"
    env: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f" {self.key}" if self.key else ""


NOW = Subject()


@contextlib.contextmanager
def checkout(commit: str) -> Iterator[Subject]:
    """``commit``'s src/ in a temp dir, imported before this tree's by the venv's ``dispatchd``.

    git archive rather than a worktree: nothing is registered in the shared repository, and a
    killed run leaves nothing behind there. The venv's installed metadata (entry points, the
    dependencies) stays this tree's.
    """
    def git(*argv: str) -> bytes:
        return subprocess.run(["git", "-C", str(ROOT), *argv], capture_output=True,
                              check=True).stdout

    rev = git("rev-parse", "--short", f"{commit}^{{commit}}").decode().strip()
    with tempfile.TemporaryDirectory(prefix=f"dispatchd-{rev}-") as name:
        with tarfile.open(fileobj=io.BytesIO(git("archive", rev, "src"))) as tar:
            tar.extractall(name, filter="data")
        src = Path(name) / "src"
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
        where = subprocess.run([PYTHON, "-c", "import dispatchd; print(dispatchd.__file__)"],
                               env={**os.environ, **env}, capture_output=True, text=True,
                               check=True).stdout.strip()
        if not Path(where).is_relative_to(src):
            raise RuntimeError(f"{commit}: dispatchd is imported from {where}, not from {src}")
        yield Subject(f"@{rev}", env)


@contextlib.contextmanager
def server(argv: list[str], url: str, log: Path,
           env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A server process on the server core; SIGTERM (then SIGKILL) when done."""
    with log.open("ab") as out:
        proc = subprocess.Popen(pinned(SERVER_CORE, argv), stdout=out, stderr=out,
                                env={**os.environ, **env} if env else None)
    try:
        asyncio.run(wait_ready(url, proc))
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def dispatchd_config(tmp: Path, port: int, enabled: list[str], loop: str,
                     database_url: str | None = None) -> Path:
    """Defaults everywhere but the port, the paths and the loop: what ``make run`` gives.

    The config has a directory of its own, as in the repository (config/ apart from var/): the
    reload watcher sees every write in the config's directory.
    """
    config = tmp / "config" / "dispatchd.toml"
    config.parent.mkdir()
    config.write_text(f"""
[server]
port = {port}
event_loop = "{loop}"
[spool]
path = "{tmp}/spool.db"
[dispatch]
enabled = {json.dumps(enabled)}
[dispatchers.database]
url = "{database_url or f'sqlite:///{tmp}/events.db'}"
[dispatchers.message]
url = "{AMQP_URL}"
""")
    return config


@contextlib.contextmanager
def dispatchd(enabled: list[str], loop: str = LOOP, stage: str | None = None,
              subject: Subject = NOW,
              database_url: str | None = None) -> Iterator[tuple[str, Path, int]]:
    """A fresh ``dispatchd serve`` on a temp dir: (url, data dir, pid); with ``stage``, its
    ingest cut short by bench/stages.py; ``database_url`` instead of a SQLite file in the temp
    dir. Its log is the data dir's daemon.log."""
    with tempfile.TemporaryDirectory(prefix="dispatchd-bench-") as name:
        tmp, port = Path(name), free_port()
        url = f"http://127.0.0.1:{port}"
        command = [str(DISPATCHD)] if stage is None else [PYTHON, str(STAGES), stage]
        config = dispatchd_config(tmp, port, enabled, loop, database_url)
        argv = [*command, "serve", "-c", str(config)]
        with server(argv, url, tmp / "daemon.log", subject.env) as proc:
            yield url, tmp, proc.pid


def status(url: str) -> dict[str, dict[str, Any]]:
    async def get() -> dict[str, dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/v1/dispatchers") as resp:
                body = await resp.json()
        return {d["name"]: d for d in body["dispatchers"]}
    return asyncio.run(get())


def wait_drained(url: str, name: str, timeout: float = 120.0) -> float:
    """Seconds until ``name``'s backlog is 0."""
    started = time.monotonic()
    while status(url)[name]["backlog"] > 0:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{name} still has a backlog after {timeout:g}s")
        time.sleep(0.05)
    return time.monotonic() - started


# -- the runs ----------------------------------------------------------------------------------


def run_bare(figures: dict[str, Figure], load: dict[str, tuple[Path, int]], args: Any) -> None:
    """On dispatchd's default loop (both shapes), and on the other loop for the "u" rows."""
    for key, loop, shapes in (("a", LOOP, ("single", "batch")), ("au", OTHER_LOOP, ("single",))):
        for shape in shapes:
            body, per = load[shape]
            figure = figures.setdefault(f"{key}-{shape}", Figure(BARE[key], shape))
            for _ in range(args.reps):
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                argv = [PYTHON, str(ROOT / "bench" / "baselines.py"), "bare", "--port", str(port),
                        "--loop", loop]
                with server(argv, url, args.tmp / "bare.log") as proc:
                    meter = CpuMeter(proc.pid)
                    record_wrk(figure, wrk(url, body, args.seconds), per, meter)
                    figure.rss_mb.append(memory(proc.pid)[1] / MB)


def run_store(figures: dict[str, Figure], args: Any) -> None:
    figure = figures.setdefault("b", Figure("(b) aiosqlite batch inserts", f"{BATCH} rows/commit"))
    for rep in range(args.reps):
        db = args.tmp / f"store-{rep}.db"
        argv = [PYTHON, str(ROOT / "bench" / "baselines.py"), "store", "--db", str(db),
                "--seconds", f"{args.seconds:g}", "--batch", str(BATCH)]
        out = subprocess.run(pinned(SERVER_CORE, argv), capture_output=True, text=True, check=True)
        figure.events_per_s.append(json.loads(out.stdout)["rows_per_s"])


def run_senlin(figures: dict[str, Figure], load: dict[str, tuple[Path, int]], args: Any) -> None:
    figure = figures.setdefault("c", Figure("(c) Senlin: validate, ORM insert, commit", "single"))
    body, per = load["single"]
    for rep in range(args.reps):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [PYTHON, str(ROOT / "bench" / "baselines.py"), "senlin", "--port", str(port),
                "--db", str(args.tmp / f"senlin-{rep}.db"), "--loop", LOOP]
        with server(argv, url, args.tmp / "senlin.log") as proc:
            meter = CpuMeter(proc.pid)
            record_wrk(figure, wrk(url, body, args.seconds), per, meter)
            figure.rss_mb.append(memory(proc.pid)[1] / MB)


BARE = {"a": "(a) bare aiohttp, 202 unparsed", "au": f"(a) bare aiohttp, on {OTHER_LOOP}"}
LABELS = {
    "d": "(d) dispatchd, database", "du": f"(d) dispatchd, database, on {OTHER_LOOP}",
    "e": "(e) dispatchd, database + message",
    "p": "(p) dispatchd, database on PostgreSQL", "m": "(m) dispatchd, database on MariaDB",
}


def run_dispatchd(figures: dict[str, Figure], load: dict[str, tuple[Path, int]], args: Any,
                  key: str, enabled: list[str], loop: str = LOOP, subject: Subject = NOW) -> None:
    """Maximum load per shape: ingest rate and latency, what each dispatcher did meanwhile, and
    the capacity end to end: everything accepted over the time until the database had it all."""
    for shape, (body, per) in load.items():
        figure = figures.setdefault(f"{key}{subject.key}-{shape}",
                                    Figure(LABELS[key] + subject.label, shape))
        for _ in range(args.reps):
            if "message" in enabled:
                purge_queue()  # declares the bound queue: without it, messages route nowhere
            with dispatchd(enabled, loop, subject=subject) as (url, tmp, pid):
                before = status(url)
                meter = CpuMeter(pid)
                result = wrk(url, body, args.seconds)
                seconds = record_wrk(figure, result, per, meter)
                after = status(url)
                for name in enabled:
                    done = after[name]["delivered"] - before[name]["delivered"]
                    figure.add(f"{name}_per_s", done / seconds)
                    figure.add(f"{name}_backlog", after[name]["backlog"])
                drained = wait_drained(url, "database")
                figure.add("capacity_per_s", result["requests"] * per / (seconds + drained))
                if enabled == ["database"]:
                    # Accepting and storing each event: the load and the drain after it.
                    figure.add("cpu_us_to_stored", meter.us_per_event(result["requests"] * per))
                if "message" in enabled:
                    record_trouble(figure, tmp / "daemon.log", before, status(url))
                    purge_queue()  # the drain starts on an empty queue, as raw aio-pika's run does
                    figure.add("message_drain_per_s", drain_rate(url, "message", RAW_MESSAGES))
                    purge_queue()
                figure.rss_mb.append(memory(pid)[1] / MB)
            if "message" in enabled:
                # Right after each drain: the shared broker's speed drifts by a third over minutes.
                raw_amqp(figures)


def run_sql_server(figures: dict[str, Figure], load: dict[str, tuple[Path, int]], args: Any,
                   key: str) -> None:
    """(p)/(m): the ``database`` dispatcher on a fresh PostgreSQL/MariaDB database against the
    store's ceiling: the same rows upserted bare with the store's own statement
    (bench/baselines.py), on the same core. 100-record batches at the maximum (wrk) once, for
    the capacity the sustained search starts from, then that search, as (d)'s."""
    dialect = SQL_SERVERS[key]
    label = sqlserver.LABELS[dialect]
    body, per = load["batch"]
    ceiling = figures.setdefault(f"{key}-ceiling", Figure(
        f"({key}) {label}: the store's bare upserts", f"{BATCH} rows/statement"))
    which = "pg-store" if dialect == "postgresql" else "mysql-store"
    for _ in range(args.reps):
        with sqlserver.fresh_database(dialect) as db:
            argv = [PYTHON, str(ROOT / "bench" / "baselines.py"), which, "--db-url", db,
                    "--seconds", f"{args.seconds:g}", "--batch", str(BATCH)]
            server = sqlserver.ServerCpu(dialect)
            out = subprocess.run(pinned(SERVER_CORE, argv), capture_output=True, text=True,
                                 check=True)
            result = json.loads(out.stdout)
            ceiling.events_per_s.append(result["rows_per_s"])
            ceiling.cpu_us.append(result["cpu_us_per_row"])
            ceiling.add("server_cpu_us", server.us_per_event(result["rows"]))
    figure = figures.setdefault(f"{key}-batch", Figure(LABELS[key], "batch"))
    with (sqlserver.fresh_database(dialect) as db,
          dispatchd(["database"], database_url=db) as (url, _tmp, pid)):
        before = status(url)
        meter, server = CpuMeter(pid), sqlserver.ServerCpu(dialect)
        result = wrk(url, body, args.seconds)
        seconds = record_wrk(figure, result, per, meter)
        after = status(url)
        figure.add("database_per_s",
                   (after["database"]["delivered"] - before["database"]["delivered"]) / seconds)
        figure.add("database_backlog", after["database"]["backlog"])
        accepted = result["requests"] * per
        drained = wait_drained(url, "database", timeout=300)
        figure.add("capacity_per_s", accepted / (seconds + drained))
        figure.add("cpu_us_to_stored", meter.us_per_event(accepted))
        figure.add("server_cpu_us", server.us_per_event(accepted))
        figure.rss_mb.append(memory(pid)[1] / MB)
    run_sustained(figures, load, args, key, server=dialect)


def run_queries(figures: dict[str, Figure], args: Any) -> None:
    """(q): bench/query.py on a fresh 1M-row table of each store; it writes
    bench/results/query.md, and its first pages' p50/p99 come here."""
    summary = args.tmp / "query.json"
    argv = [PYTHON, str(QUERY), "--stores", "sqlite,postgresql,mysql", "--json", str(summary)]
    # Its progress goes to the terminal; exit 3 says a first page missed the target (the ratios
    # show which).
    done = subprocess.run(pinned(SERVER_CORE, argv), check=False)
    if done.returncode not in (0, 3):
        raise RuntimeError(f"bench/query.py failed with exit {done.returncode}")
    for store, times in json.loads(summary.read_text()).items():
        for name, (p50, p99) in times.items():
            if "newest 100" in name and "=X" in name:
                figure = figures.setdefault(f"q-{store}-{name}", Figure(
                    f"(q) query on {sqlserver.LABELS[store]}, 1M rows", name))
                figure.p50_ms.append(p50)
                figure.p99_ms.append(p99)


STAGE_LABELS = {
    "read": "(s) dispatchd's app: read the body, answer",
    "validate": "(s) ... + validate and serialise",
    "spool": "(s) ... + commit to the spool (no dispatchers)",
}


def run_stages(figures: dict[str, Figure], load: dict[str, tuple[Path, int]], args: Any) -> None:
    """Single records through ever more of dispatchd: where the requests/s of (d) go."""
    body, per = load["single"]
    for stage, label in STAGE_LABELS.items():
        figure = figures.setdefault(f"s-{stage}", Figure(label, "single"))
        for _ in range(args.reps):
            patch = None if stage == "spool" else stage
            with dispatchd([], stage=patch) as (url, _tmp, pid):
                meter = CpuMeter(pid)
                record_wrk(figure, wrk(url, body, args.seconds), per, meter)
                figure.rss_mb.append(memory(pid)[1] / MB)


def run_sustained(figures: dict[str, Figure], load: dict[str, tuple[Path, int]], args: Any,
                  key: str = "d", loop: str = LOOP, subject: Subject = NOW,
                  server: str | None = None) -> None:
    """The highest batch rate the database keeps up with, open loop.

    Up from 90% of the measured capacity in steps of 15% until the database's backlog at the end
    of a run exceeds 0.2 s of traffic, then two bisections; then ``--reps`` runs at the rate that
    held, stepping down 7% (at most three times) while their median backlog does not hold.
    ``server``: the database dispatcher on a fresh database of that SQL server in each run.
    """
    body, per = load["batch"]

    def run(rate: float) -> Sustained:
        if server is None:
            return sustain(body, per, rate, args.seconds, loop, subject)
        with sqlserver.fresh_database(server) as db:
            return sustain(body, per, rate, args.seconds, loop, subject, db)

    held, failed = 0.0, 0.9 * figures[f"{key}{subject.key}-batch"].get("capacity_per_s")
    while holds([run(failed)], failed):
        held, failed = failed, failed * 1.15
    for _ in range(2):
        middle = (held + failed) / 2 if held else failed / 1.15
        if holds([run(middle)], middle):
            held = middle
        else:
            failed = middle
    rate = held or failed / 1.15
    for _ in range(4):
        runs = [run(rate) for _ in range(args.reps)]
        if holds(runs, rate):
            break
        rate *= 0.93
    figure = figures.setdefault(f"{key}{subject.key}-batch-sustained", Figure(
        LABELS[key] + subject.label + ", sustained", f"batch @ {rate:,.0f}/s"))
    for one in runs:
        figure.events_per_s.append(one.taken)
        figure.p50_ms.append(one.result["p50_ms"])
        figure.p99_ms.append(one.result["p99_ms"])
        figure.cpu_us.append(one.cpu_us)
        figure.add("cpu_cores", one.cpu_cores)
        figure.add("database_backlog", one.backlog)
        figure.rss_mb.append(one.rss_mb)


class Sustained(NamedTuple):
    """One open-loop run: the database's backlog at its end, the rate ingest actually took."""

    backlog: float
    taken: float
    result: dict[str, Any]
    rss_mb: float
    cpu_us: float
    cpu_cores: float


def holds(runs: list[Sustained], rate: float) -> bool:
    """Whether, in the median of ``runs``, ingest took the load as offered (a generator that has
    to queue requests is no longer offering ``rate``) and the database kept up: its backlog at
    the end is within 0.2 s of traffic."""
    backlog, taken = median([r.backlog for r in runs]), median([r.taken for r in runs])
    verdict = taken >= 0.97 * rate and backlog <= 0.2 * rate
    print(f"bench:   {rate:,.0f} events/s offered, {taken:,.0f} taken: backlog {backlog:,.0f}, "
          f"{'held' if verdict else 'fell behind'}", file=sys.stderr)
    return verdict


def sustain(body: Path, per: int, rate: float, seconds: float, loop: str,
            subject: Subject = NOW, database_url: str | None = None) -> Sustained:
    """One open-loop run at ``rate`` events/s of ``per``-record requests."""
    with dispatchd(["database"], loop, subject=subject,
                   database_url=database_url) as (url, _tmp, pid):
        meter = CpuMeter(pid)
        result = fixed_rate(url, body, rate / per, seconds)
        cpu_us, cores = meter.us_per_event(result["ok"] * per), meter.cores()
        backlog = status(url)["database"]["backlog"]
        return Sustained(backlog, result["ok"] * per / result["seconds"], result,
                         memory(pid)[1] / MB, cpu_us, cores)


def drain_rate(url: str, name: str, count: int) -> float:
    """With ingest stopped, the rate at which ``name`` works off the first ``count`` records of
    its backlog: as many messages as the raw aio-pika baseline publishes, into the same queue,
    emptied before, so that the broker's work is the same (a queue of 250k messages is slower)."""
    before = status(url)[name]
    count = min(count, before["backlog"])
    if count < 1000:
        return float("nan")  # it kept up: there is nothing left to measure
    started = time.monotonic()
    while (done := status(url)[name]["delivered"] - before["delivered"]) < count:
        if time.monotonic() - started > 120:
            raise TimeoutError(f"{name} delivered {done} of {count} in 120 s")
        time.sleep(0.02)
    return float(done) / (time.monotonic() - started)


def run_lag(figures: dict[str, Figure], load: dict[str, tuple[Path, int]], args: Any) -> None:
    """At half the maximum sustained rate (batches) or capacity (single events): request
    latency and accepted -> stored lag."""
    for shape, (body, per) in load.items():
        sustained = figures.get(f"d-{shape}-sustained")
        top = sustained.get("events_per_s") if sustained else figures[f"d-{shape}"].get(
            "capacity_per_s")
        rate = top / 2
        figure = figures.setdefault(
            f"d-{shape}-half", Figure("(d) dispatchd at half its maximum", f"{shape} @ {rate:,.0f}/s")
        )
        for _ in range(args.reps):
            with dispatchd(["database"]) as (url, tmp, pid):
                stamp_arrivals(tmp / "events.db")
                meter = CpuMeter(pid)
                result = fixed_rate(url, body, rate / per, args.seconds)
                record_cpu(figure, meter, result["ok"] * per)
                figure.events_per_s.append(result["ok"] * per / result["seconds"])
                figure.p50_ms.append(result["p50_ms"])
                figure.p99_ms.append(result["p99_ms"])
                wait_drained(url, "database")
                figure.lag_p99_ms.append(percentile(lags(tmp / "events.db"), 0.99) * 1e3)
                figure.rss_mb.append(memory(pid)[1] / MB)


def stamp_arrivals(db: Path) -> None:
    """Record when each row reaches the sink table, in SQLite's own clock (ms resolution)."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        conn.executescript("""
            CREATE TABLE IF NOT EXISTS arrival (id TEXT, at REAL);
            CREATE TRIGGER IF NOT EXISTS stamp AFTER INSERT ON event
            BEGIN INSERT INTO arrival VALUES (new.id, julianday('now')); END;
        """)


def lags(db: Path) -> list[float]:
    """Seconds between each record's timestamp (set when accepted) and its arrival in the sink."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        rows = conn.execute("SELECT e.timestamp, a.at FROM event e JOIN arrival a USING (id)")
        return [(at - 2440587.5) * 86400.0 - datetime.fromisoformat(ts).timestamp()
                for ts, at in rows]


def raw_amqp(figures: dict[str, Figure]) -> None:
    """One run of raw aio-pika publishing ``RAW_MESSAGES`` into the emptied bench queue."""
    figure = figures.setdefault("amqp", Figure("raw aio-pika, confirms per 100", "single msgs"))
    argv = [PYTHON, str(ROOT / "bench" / "baselines.py"), "amqp", "--events", str(RAW_MESSAGES),
            "--loop", LOOP]
    purge_queue()
    out = subprocess.run(pinned(SERVER_CORE, argv), capture_output=True, text=True, check=True)
    figure.events_per_s.append(json.loads(out.stdout)["messages_per_s"])
    purge_queue()


def bench_queue(action: Callable[[Any], Any]) -> None:
    import aio_pika

    async def go() -> None:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange("dispatchd", "topic", durable=True)
            queue = await channel.declare_queue(BENCH_QUEUE, durable=True)
            await queue.bind(exchange, "#")
            await action(queue)
    asyncio.run(go())


def purge_queue() -> None:
    bench_queue(lambda queue: queue.purge())


# -- (e): message while ingest runs ------------------------------------------------------------


def max_batch_rate(figures: dict[str, Figure]) -> tuple[float, str]:
    """dispatchd's maximum sustained batch rate, and where it comes from: (d)'s sustained row,
    or, when that did not run, (d)'s capacity (the sustained rate is within a few % of it)."""
    if "d-batch-sustained" in figures:
        return figures["d-batch-sustained"].get("events_per_s"), "d sustained"
    return figures["d-batch"].get("capacity_per_s"), "d capacity"


def run_message_sustained(figures: dict[str, Figure], load: dict[str, tuple[Path, int]],
                          args: Any) -> None:
    """Batches at dispatchd's maximum sustained rate (open loop) with ``message`` on: what
    ``message`` delivers meanwhile, next to a raw aio-pika run right after each repetition."""
    body, per = load["batch"]
    rate, source = max_batch_rate(figures)
    figure = figures.setdefault("e-batch-sustained", Figure(
        LABELS["e"] + f", at {source}", f"batch @ {rate:,.0f}/s"))
    enabled = ["database", "message"]
    for _ in range(args.reps):
        purge_queue()
        with dispatchd(enabled) as (url, tmp, pid):
            before = status(url)
            meter = CpuMeter(pid)
            result = fixed_rate(url, body, rate / per, args.seconds, tolerate=True)
            figure.add("offered", rate)
            record_cpu(figure, meter, result["ok"] * per)
            after = status(url)
            seconds = result["seconds"]
            figure.events_per_s.append(result["ok"] * per / seconds)
            figure.p50_ms.append(result["p50_ms"])
            figure.p99_ms.append(result["p99_ms"])
            figure.add("refused", result["errors"] * per)
            for name in enabled:
                done = after[name]["delivered"] - before[name]["delivered"]
                figure.add(f"{name}_per_s", done / seconds)
                figure.add(f"{name}_backlog", after[name]["backlog"])
            record_trouble(figure, tmp / "daemon.log", before, after)
            figure.rss_mb.append(memory(pid)[1] / MB)
        purge_queue()
        raw_amqp(figures)


def run_message_half(figures: dict[str, Figure], load: dict[str, tuple[Path, int]],
                     args: Any) -> None:
    """Single records at half of dispatchd's maximum (as the (d) lag row) with ``message`` on:
    its backlog over time, and accepted (the 202) -> arrived on the bench queue, per id."""
    body, per = load["single"]
    rate = figures["d-single"].get("capacity_per_s") / 2
    figure = figures.setdefault("e-single-half", Figure(
        LABELS["e"] + ", at half d's maximum", f"single @ {rate:,.0f}/s"))
    enabled = ["database", "message"]
    for _ in range(args.reps):
        purge_queue()
        with dispatchd(enabled) as (url, tmp, pid), consumer(tmp / "arrived.tsv") as (stop, cid):
            before = status(url)
            meter, reader = CpuMeter(pid), CpuMeter(cid)
            with sampling(url, "message") as samples:
                result = fixed_rate(url, body, rate / per, args.seconds, tmp / "accepted.tsv")
            record_cpu(figure, meter, result["ok"] * per)
            # It shares the load core with the load generator: a full core would delay both.
            figure.add("consumer_cores", reader.cores())
            after = status(url)
            figure.events_per_s.append(result["ok"] * per / result["seconds"])
            figure.p50_ms.append(result["p50_ms"])
            figure.p99_ms.append(result["p99_ms"])
            figure.add("message_per_s",
                       (after["message"]["delivered"] - before["message"]["delivered"])
                       / result["seconds"])
            figure.series.setdefault("message_backlog", []).append([b for _, b in samples])
            figure.add("message_backlog_max", max((b for _, b in samples), default=0))
            # Bounded: over the last third of the load, at most a second's traffic waits.
            tail = [b for t, b in samples if t >= result["seconds"] * 2 / 3]
            figure.add("message_backlog_last_third", max(tail, default=0))
            figure.add("bound", rate)
            with contextlib.suppress(TimeoutError):
                wait_drained(url, "message", timeout=60)
            record_trouble(figure, tmp / "daemon.log", before, status(url))
            figure.rss_mb.append(memory(pid)[1] / MB)
            stop()
            lag, missing, duplicates = arrival_lags(tmp / "accepted.tsv", tmp / "arrived.tsv")
            figure.add("message_lag_p50_ms", percentile(lag, 0.50) * 1e3)
            figure.add("message_lag_max_ms", max(lag, default=float("nan")) * 1e3)
            figure.lag_p99_ms.append(percentile(lag, 0.99) * 1e3)
            figure.add("missing", missing)
            figure.add("duplicates", duplicates)
    purge_queue()


@contextlib.contextmanager
def consumer(out: Path) -> Iterator[tuple[Callable[[], None], int]]:
    """bench/consumer.py on the load core, consuming the bench queue into ``out``; yields a
    function that stops it once the queue is quiet and waits until ``out`` is written, and its
    pid."""
    argv = [PYTHON, str(CONSUMER), AMQP_URL, BENCH_QUEUE, str(out)]
    proc = subprocess.Popen(pinned(LOAD_CORE, argv), stdout=subprocess.PIPE, text=True)

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)

    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"bench/consumer.py did not start: exit {proc.wait()}")
        yield stop, proc.pid
    finally:
        stop()


@contextlib.contextmanager
def sampling(url: str, name: str, every: float = 0.5) -> Iterator[list[tuple[float, int]]]:
    """``name``'s backlog every ``every`` seconds, from a thread, while the block runs: a list of
    (seconds since the start, backlog)."""
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    async def poll() -> None:
        started = time.monotonic()
        async with aiohttp.ClientSession() as session:
            while not done.is_set():
                async with session.get(url + "/v1/dispatchers") as resp:
                    body = await resp.json()
                backlog = next(d["backlog"] for d in body["dispatchers"] if d["name"] == name)
                samples.append((time.monotonic() - started, backlog))
                await asyncio.sleep(every)

    thread = threading.Thread(target=asyncio.run, args=(poll(),), daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join()


def arrival_lags(accepted: Path, arrived: Path) -> tuple[list[float], int, int]:
    """Seconds from each record's 202 to its message's first arrival on the queue; how many
    accepted records never arrived, and how many messages arrived again (re-published)."""
    when = dict(line.split("\t") for line in accepted.read_text().splitlines())
    first: dict[str, float] = {}
    duplicates = 0
    for line in arrived.read_text().splitlines():
        mid, at = line.split("\t")
        if mid in first:
            duplicates += 1
        else:
            first[mid] = float(at)
    lag = [first[mid] - float(at) for mid, at in when.items() if mid in first]
    return lag, len(when) - len(lag), duplicates


# What the daemon's log says went wrong with ``message`` during a run (text format).
MESSAGE_LINE = re.compile(r"dispatchers\.message:|dispatcher message\b")
TROUBLE = {
    "timeouts": re.compile(r"not in after|timed out|timeout", re.I),
    "republishes": re.compile(r"re-?publish", re.I),
    "log_warnings": re.compile(r"\b(WARNING|ERROR|CRITICAL)\b"),
}


def record_trouble(figure: Figure, log: Path, before: dict[str, dict[str, Any]],
                   after: dict[str, dict[str, Any]]) -> None:
    """Confirm (or delivery) timeouts, reconnects (connections after the first), re-publishes and
    any warning or error of ``message`` in the daemon log so far; its failed attempts in status."""
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if MESSAGE_LINE.search(line)]
    for key, pattern in TROUBLE.items():
        figure.add(key, sum(1 for line in lines if pattern.search(line)))
    connections = sum(1 for line in lines if "connected to" in line)
    figure.add("reconnects", max(0, connections - 1))
    figure.add("failed_attempts", after["message"]["failed"] - before["message"]["failed"])


# -- the report --------------------------------------------------------------------------------

# Notes a healthy run has none of: shown only when not zero.
QUIET_ZERO = {"refused", "timeouts", "reconnects", "republishes", "log_warnings",
              "failed_attempts", "missing", "duplicates"}
HIDDEN = {"bound", "offered"}  # kept for the ratios, not notes


NAMES = {"cpu_cores": "CPU cores", "cpu_us_to_stored": "CPU µs/event accepted and stored",
         "server_cpu_us": "database server CPU µs/event"}


def note(key: str, value: float) -> str:
    digits = 2 if key.endswith("_cores") else 1 if "cpu_us" in key else 0
    return f"{NAMES.get(key, key.replace('_', ' '))} {value:,.{digits}f}"


def table(figures: dict[str, Figure]) -> list[str]:
    lines = ["| run | load | events/s | CPU µs/event | req p50 ms | req p99 ms | lag p99 ms "
             "| peak RSS MB | notes |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for figure in figures.values():
        notes = ", ".join(note(k, median(v)) for k, v in figure.extra.items()
                          if k not in HIDDEN and not (k in QUIET_ZERO and median(v) == 0))
        lines.append(f"| {figure.name} | {figure.shape} | {_n(figure.get('events_per_s'))} | "
                     f"{_f(figure.get('cpu_us'))} | "
                     f"{_f(figure.get('p50_ms'))} | {_f(figure.get('p99_ms'))} | "
                     f"{_f(figure.get('lag_p99_ms'))} | {_f(figure.get('rss_mb'), 0)} | {notes} |")
    return lines


def series(figures: dict[str, Figure]) -> list[str]:
    """Every sampled series, one line per repetition."""
    lines: list[str] = []
    for figure in figures.values():
        for name, reps in figure.series.items():
            lines += ["", f"{figure.name}, {figure.shape}: {name.replace('_', ' ')}, every 0.5 s "
                      "of the load:", ""]
            lines += [f"- run {i}: " + " ".join(f"{v:,.0f}" for v in values)
                      for i, values in enumerate(reps, 1)]
    return lines


def ratios(figures: dict[str, Figure], baseline: str) -> list[str]:
    def get(key: str, what: str = "events_per_s") -> float:
        return figures[key].get(what) if key in figures else float("nan")

    def total(what: str) -> str:
        runs = [v for key, f in figures.items() if key.startswith("e-") for v in f.extra.get(what, [])]
        return f"{sum(runs):,.0f}" if runs else ""

    # Every drain, after single records and after batches, each next to a raw run.
    drains = [rate for key in ("e-single", "e-batch") if key in figures
              for rate in figures[key].extra.get("message_drain_per_s", []) if rate == rate]

    rows = [
        ("d/a single: requests/s against bare aiohttp", get("d-single") / get("a-single"), ">= 0.60"),
        (f"d/a single, both on {OTHER_LOOP}", get("du-single") / get("au-single"), ">= 0.60"),
        *((f"{figures[f's-{stage}'].name} against bare aiohttp",
           get(f"s-{stage}") / get("a-single"), "") for stage in STAGE_LABELS
          if f"s-{stage}" in figures),
        ("d/b batches: sustained end to end against the store ceiling",
         get("d-batch-sustained") / get("b"), ">= 0.50"),
        (f"d/b batches, on {OTHER_LOOP}", get("du-batch-sustained") / get("b"), ">= 0.50"),
        ("d/c single: against Senlin's per-event pattern", get("d-single") / get("c"), ">= 10"),
        ("d/c batches: sustained against Senlin's per-event pattern",
         get("d-batch-sustained") / get("c"), ">= 10"),
        # At wrk's maximum, message's backlog takes its turns on the loop (workers.Turn): these
        # show what that costs ingest and the database, and are no longer targets.
        ("e/d batches at maximum (wrk): ingest with message on", get("e-batch") / get("d-batch"),
         ""),
        ("e/d batches at maximum (wrk): database capacity with message on",
         get("e-batch", "capacity_per_s") / get("d-batch", "capacity_per_s"), ""),
        ("(e) batches at dispatchd's maximum sustained rate: ingest, accepted / offered",
         get("e-batch-sustained") / get("e-batch-sustained", "offered"), ">= 0.97"),
        ("message draining its backlog against raw aio-pika",
         median(drains) / get("amqp"), ">= 0.80"),
        ("message during (e) batches at maximum (wrk) against raw aio-pika",
         get("e-batch", "message_per_s") / get("amqp"), ""),
        ("message during (e) batches at dispatchd's maximum sustained rate against raw aio-pika",
         get("e-batch-sustained", "message_per_s") / get("amqp"), ">= 0.80"),
        *((f"{key}/ceiling batches on {sqlserver.LABELS[dialect]}: sustained end to end against "
           "the store's bare upserts", get(f"{key}-batch-sustained") / get(f"{key}-ceiling"),
           ">= 0.70") for key, dialect in SQL_SERVERS.items()),
    ]
    if baseline:
        rows += [
            (f"d batches: sustained end to end, now against {baseline}",
             get("d-batch-sustained") / get(f"d{baseline}-batch-sustained"), ">= 2.00"),
            (f"d single: requests/s, now against {baseline}",
             get("d-single") / get(f"d{baseline}-single"), ""),
            (f"d batches at maximum (wrk): ingest, now against {baseline}",
             get("d-batch") / get(f"d{baseline}-batch"), ""),
        ]
    lines = ["| ratio | value | target |", "|---|---:|---|"]
    lines += [f"| {name} | {value:.2f} | {target} |" for name, value, target in rows
              if value == value]  # NaN: a row that did not run
    for key in ("d-single-half", "d-batch-half"):
        if key in figures:
            lines.append(f"| lag p99 at half maximum, {figures[key].shape} | "
                         f"{figures[key].get('lag_p99_ms'):.1f} ms | <= 50 ms |")
    for key, figure in figures.items():
        if key.startswith("q-"):
            lines.append(f"| {figure.name}: {figure.shape}, p99 | {figure.get('p99_ms'):.1f} ms | "
                         f"<= {QUERY_P99_MS:g} ms |")
    if any(key.startswith("e-") for key in figures):
        lines.append("| (e) every run, message: timeouts / reconnects / re-publishes in the daemon "
                     f"log; duplicates on the queue | {total('timeouts')} / {total('reconnects')} / "
                     f"{total('republishes')}; {total('duplicates')} | 0 |")
    if "e-single-half" in figures:
        half = figures["e-single-half"]
        lines += [
            f"| (e) {half.shape}: message backlog, highest in the last third of the load | "
            f"{half.get('message_backlog_last_third'):,.0f} | <= {half.get('bound'):,.0f} "
            "(1 s of traffic) |",
            f"| (e) {half.shape}: accepted (202) -> on the queue, lag p99 | "
            f"{half.get('lag_p99_ms'):,.0f} ms | <= 1000 ms |",
        ]
    return lines


def cpu_table(figures: dict[str, Figure], baseline: str) -> list[str]:
    """CPU per event of every row that has it, and of its run against the baseline commit."""
    lines = ["| server CPU per event (user+sys, all threads) | µs now |"
             + (f" µs {baseline} | now / {baseline} |" if baseline else ""),
             "|---|---:|" + ("---:|---:|" if baseline else "")]
    for key, figure in figures.items():
        if not figure.cpu_us or "@" in key:
            continue
        prefix, _, rest = key.partition("-")
        then = figures.get(f"{prefix}{baseline}-{rest}") if baseline else None
        for what, suffix in (("cpu_us", ""), ("cpu_us_to_stored", ", accepted and stored")):
            now = figure.get(what)
            if now != now:
                continue
            old = then.get(what) if then else float("nan")
            lines.append(f"| {figure.name}, {figure.shape}{suffix} | {_f(now)} |"
                         + (f" {_f(old)} | {_f(now / old, 2)} |" if baseline else ""))
    return lines


def _n(value: float) -> str:
    return "" if value != value else f"{value:,.0f}"


def _f(value: float, digits: int = 1) -> str:
    return "" if value != value else f"{value:,.{digits}f}"


def report(figures: dict[str, Figure], args: Any) -> str:
    raw = {key: {k: v for k, v in vars(f).items() if k not in ("name", "shape")}
           for key, f in figures.items()}
    against = (f" Rows marked {args.baseline} ran the src/ of {args.baseline_subject} on the "
               "same venv, in this session."
               if args.baseline else "")
    return "\n".join([
        "# bench/run.py", "",
        f"{machine()}. Server on core {SERVER_CORE}, load on core {LOAD_CORE}; event loop "
        f"{LOOP} (dispatchd's default) unless a row says otherwise; "
        f"{args.reps} x {args.seconds:g} s per run, medians; wrk -t1 -c{CONNECTIONS}; "
        f"batches of {BATCH} records.{against}", "",
        *table(figures), *series(figures), "", *ratios(figures, args.baseline), "",
        *cpu_table(figures, args.baseline), "",
        "<details><summary>every repetition</summary>", "", "```json",
        json.dumps(raw, indent=1), "```", "</details>", "",
    ])


def rows(text: str) -> set[str]:
    """``--only``: row letters, with or without commas ("d,e", "de")."""
    letters = set(text.replace(",", "").replace(" ", ""))
    if not letters or letters - set(ROWS + OPTIONAL_ROWS):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give one or more of {','.join(ROWS + OPTIONAL_ROWS)}")
    return letters


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", type=rows, default=set(ROWS),
                        help="rows, e.g. 'e' or 'd,e': a,b,c,d,e as in docs/performance.md; u: d "
                             "on the other event loop; s: the stages of a single-record POST; "
                             "p, m: the database dispatcher on PostgreSQL, MariaDB; q (only when "
                             "asked for): query latency on 1M rows of each store")
    parser.add_argument("--baseline-commit", default=BASELINE_COMMIT,
                        help="with d: run (d)'s maximum and sustained rows again on this commit's "
                             "src/ (default %(default)s, the commit before issue 13); 'none' skips")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.md")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench needs wrk (Debian package 'wrk'): apt-get install wrk")
    only: set[str] = args.only
    figures: dict[str, Figure] = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as name, contextlib.ExitStack() as stack:
        args.tmp = Path(name)
        load = bodies(args.tmp)
        base = None
        if "d" in only and args.baseline_commit.lower() not in ("", "none"):
            base = stack.enter_context(checkout(args.baseline_commit))
        args.baseline = base.key if base else ""
        args.baseline_subject = subject_line(args.baseline_commit) if base else ""

        def d_maximum() -> None:  # (e) runs at fractions of (d)'s maximum
            if "d-single" not in figures:
                run_dispatchd(figures, load, args, "d", ["database"])

        steps: list[tuple[str, Callable[[], None]]] = [
            ("a", lambda: run_bare(figures, load, args)),
            ("b", lambda: run_store(figures, args)),
            ("c", lambda: run_senlin(figures, load, args)),
            ("s", lambda: run_stages(figures, load, args)),
            ("d", lambda: run_dispatchd(figures, load, args, "d", ["database"])),
            ("d", lambda: run_sustained(figures, load, args)),
            ("d", lambda: run_lag(figures, load, args)),
        ]
        if base is not None:
            steps += [
                ("d", lambda: run_dispatchd(figures, load, args, "d", ["database"], subject=base)),
                ("d", lambda: run_sustained(figures, load, args, subject=base)),
            ]
        steps += [
            ("u", lambda: run_dispatchd(figures, load, args, "du", ["database"], OTHER_LOOP)),
            ("u", lambda: run_sustained(figures, load, args, "du", OTHER_LOOP)),
            ("e", d_maximum),
            ("e", lambda: run_dispatchd(figures, load, args, "e", ["database", "message"])),
            ("e", lambda: run_message_sustained(figures, load, args)),
            ("e", lambda: run_message_half(figures, load, args)),
            ("p", lambda: run_sql_server(figures, load, args, "p")),
            ("m", lambda: run_sql_server(figures, load, args, "m")),
            ("q", lambda: run_queries(figures, args)),
        ]
        for key, step in steps:
            if key in only:
                print(f"bench: {key} ...", file=sys.stderr, flush=True)
                step()
        if "e" in only:
            bench_queue(lambda queue: queue.delete(if_unused=False, if_empty=False))
    text = report(figures, args)
    args.out.write_text(text)
    print(text)
    return 0


def subject_line(commit: str) -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", commit],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
