"""Running Senlin's own code: scripts in ``tests/senlin/`` run by Senlin's environments.

``make test`` builds the environments (``make senlin-venvs``): Senlin 16.0.0 on SQLAlchemy 2
and on SQLAlchemy 1.4, each with the bridge (``plugins/senlin``) installed. Their pins never
meet dispatchd's: the scripts run in subprocesses and answer in JSON on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "tests" / "senlin"
VENVS = {
    "sa2": ROOT / os.environ.get("SENLIN_VENV", ".venv-senlin"),
    "sa14": ROOT / os.environ.get("SENLIN14_VENV", ".venv-senlin-sa14"),
}


def senlin_python(venv: str = "sa2") -> Path:
    """The Python of a Senlin environment; skips without one, except under CI, which fails."""
    python = VENVS[venv] / "bin" / "python"
    if not (VENVS[venv] / ".installed").exists():
        message = f"no Senlin environment at {VENVS[venv]}: run `make senlin-venvs`"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run the Senlin tests)")
        pytest.skip(message)
    return python


def run_script(
    name: str, *args: str, venv: str = "sa2", timeout: float = 120.0,
    env: dict[str, str] | None = None, stdin: Any = None,
) -> Any:
    """Run ``tests/senlin/<name>.py args`` in a Senlin environment; its stdout, parsed as JSON."""
    python = senlin_python(venv)
    proc = subprocess.run(
        [str(python), "-W", "ignore", str(SCRIPTS / f"{name}.py"), *args],
        input=None if stdin is None else json.dumps(stdin, default=str),
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise AssertionError(f"tests/senlin/{name}.py exited {proc.returncode}: "
                             f"{proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout) if proc.stdout.strip() else None
