"""dispatchd replicas as containers of the image (``make image``), with Podman or Docker: host
networking (so that they reach this machine's PostgreSQL and RabbitMQ on 127.0.0.1), a named
spool volume each, and deploy/config/dispatchd.toml with only the port and the exchange changed."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import merge, write_config
from .daemon import ready

DEPLOY_CONFIG = Path(__file__).parent.parent.parent / "deploy" / "config" / "dispatchd.toml"
CONTAINER = shlex.split(os.environ.get("DISPATCHD_CONTAINER", "podman"))  # the Makefile's CONTAINER
IMAGE = os.environ.get("DISPATCHD_IMAGE", "dispatchd:latest")  # the Makefile's IMAGE:VERSION


async def container(*args: str, check: bool = True) -> str:
    """Run the container tool without blocking the event loop (the load runs meanwhile)."""
    proc = await asyncio.create_subprocess_exec(*CONTAINER, *args, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT)
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if check and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join([*CONTAINER, *args])} exited {proc.returncode}:\n{text}")
    return text


class ContainerReplica:
    """One container; its host name (the deployed config's default ``server.instance``) is its
    name. ``start`` runs it the first time and starts the same container (same volume) later."""

    def __init__(self, tmp: Path, name: str, port: int, env: Mapping[str, str],
                 overrides: Mapping[str, Any]) -> None:
        self.instance = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.volume = f"{name}-spool"
        self.env = {**env, "DISPATCHD_HEALTHCHECK_URL": f"{self.url}/healthz"}
        # The image runs as uid 10001: the mounted config directory must be readable by it.
        self.config_dir = tmp / name
        self.config_dir.mkdir(mode=0o755)
        self.config_dir.chmod(0o755)
        deployed = tomllib.loads(DEPLOY_CONFIG.read_text())
        config = write_config(self.config_dir / "dispatchd.toml",
                              merge(deployed, {"server": {"port": port}, **overrides}))
        config.chmod(0o644)
        self.created = False

    async def start(self, timeout: float = 60.0) -> None:
        if self.created:
            await container("start", self.instance)
        else:
            env = [arg for key, value in self.env.items() for arg in ("-e", f"{key}={value}")]
            await container("run", "-d", "--name", self.instance, "--hostname", self.instance,
                            "--network", "host", "-v", f"{self.volume}:/var/lib/dispatchd",
                            "-v", f"{self.config_dir}:/etc/dispatchd:ro", *env, IMAGE)
            self.created = True
        if not await ready(self.url, timeout, interval=0.1):
            raise TimeoutError(f"{self.instance} not ready after {timeout}s:\n{await self.logs_async()}")

    async def kill(self) -> None:
        await container("kill", "-s", "KILL", self.instance)

    async def logs_async(self) -> str:
        return await container("logs", self.instance, check=False)

    def logs(self) -> str:
        result = subprocess.run([*CONTAINER, "logs", self.instance], capture_output=True,
                                text=True, timeout=60)
        return result.stdout + result.stderr

    async def remove(self) -> None:
        await container("kill", "-s", "KILL", self.instance, check=False)
        await container("rm", "-f", self.instance, check=False)
        await container("volume", "rm", "-f", self.volume, check=False)
