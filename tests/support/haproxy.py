"""HAProxy in front of local replicas, configured from ``deploy/haproxy.cfg``: the deployed file's
timeouts, retries, balancing and ``/readyz`` checks, with loopback ports instead of the compose
names. Needs the ``haproxy`` binary (Debian package; ``.ci/run`` installs it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from .daemon import free_port, ready

DEPLOYED = Path(__file__).parent.parent.parent / "deploy" / "haproxy.cfg"


def require_haproxy() -> str:
    """The ``haproxy`` binary; skip without it on a developer machine, fail under CI."""
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None)
    if found is None:
        message = "haproxy is not installed (apt-get install haproxy)"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run this test; .ci/run installs it)")
        pytest.skip(message)
    return found


def _replace(text: str, pattern: str, new: str | Callable[[re.Match[str]], str],
             count: int = 1) -> str:
    """``text`` with exactly ``count`` matches of ``pattern`` replaced: a changed deploy file
    fails here, by name, instead of testing something else than what is deployed."""
    result, n = re.subn(pattern, new, text, flags=re.MULTILINE)
    assert n == count, f"{DEPLOYED}: expected {count} match(es) of {pattern!r}, found {n}"
    return result


def local_config(port: int, stats_port: int, backends: Sequence[tuple[str, int]]) -> str:
    """``deploy/haproxy.cfg`` listening on loopback ``port`` (stats on ``stats_port``), its
    ``server`` lines replaced by one per ``(name, port)`` replica on 127.0.0.1."""
    text = DEPLOYED.read_text()
    text = _replace(text, r"^([ \t]*bind\s+):8080\b", rf"\g<1>127.0.0.1:{port}")
    text = _replace(text, r"^([ \t]*bind\s+):8404\b", rf"\g<1>127.0.0.1:{stats_port}")
    indent = re.search(r"^([ \t]*)server\s", text, re.MULTILINE)
    assert indent, f"{DEPLOYED} has no server line"
    servers = "".join(f"{indent[1]}server {name} 127.0.0.1:{p}\n" for name, p in backends)
    text = re.sub(r"^[ \t]*server\s.*\n", "", text, flags=re.MULTILINE)
    return _replace(text, r"^([ \t]*default-server\s.*\n)", lambda m: m[1] + servers)


class HAProxy:
    """One ``haproxy`` process in the foreground, its log in ``tmp/haproxy.log``."""

    def __init__(self, tmp: Path, backends: Sequence[tuple[str, int]]) -> None:
        self.binary = require_haproxy()
        self.port = free_port()
        self.stats_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp / "haproxy.cfg"
        self.config.write_text(local_config(self.port, self.stats_port, backends))
        self.log = tmp / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 20.0) -> None:
        """Start, and return once a ``/readyz`` through the proxy reaches a ready replica."""
        check = subprocess.run([self.binary, "-c", "-f", str(self.config)],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([self.binary, "-db", "-f", str(self.config)],
                                         stdout=log, stderr=log)
        proc = self.proc

        def gone() -> str | None:
            code = proc.poll()
            return None if code is None else f"haproxy exited with {code}:\n{self.logs()}"

        if not await ready(self.url, timeout, gone):
            raise TimeoutError(f"haproxy not serving after {timeout}s:\n{self.logs()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
