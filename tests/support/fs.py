"""Real filesystems for disk-space tests: a small tmpfs, a read-only bind mount (root only)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def needs_root(what: str) -> None:
    """Skip without root, except under ``CI=true``, where nothing may skip."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} needs root (CI=true: no skipping)")
        pytest.skip(f"{what} needs root")


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` (``"8m"``) mounted at ``path``, unmounted afterwards."""
    needs_root("mounting a small filesystem")
    path.mkdir(parents=True, exist_ok=True)
    _run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)])
    try:
        yield path
    finally:
        _unmount(path)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` made unwritable, even for root (a read-only bind mount); as it was afterwards."""
    if os.geteuid() != 0:  # permissions are enough for anyone else
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(mode)
        return
    _run(["mount", "--bind", str(path), str(path)])
    try:
        _run(["mount", "-o", "remount,bind,ro", str(path)])
        yield path
    finally:
        _unmount(path)


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr}"


def _unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        _run(["umount", "-l", str(path)])  # still busy: detach it now, freed when let go
