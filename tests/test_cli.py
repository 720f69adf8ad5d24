"""The ``dispatchd`` command, run as a subprocess like an operator would."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

from .conftest import TESTPLUGINS, config_text
from .daemon import DISPATCHD

REPO = Path(__file__).parent.parent


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(TESTPLUGINS), **(env or {})}
    return subprocess.run(
        [str(DISPATCHD), *args], capture_output=True, text=True, env=full_env, timeout=60
    )


def test_check_config_accepts_the_shipped_file():
    result = run("check-config", "-c", str(REPO / "config" / "dispatchd.toml"))
    assert result.returncode == 0, result.stderr
    assert "OK (enabled dispatchers: database)" in result.stdout


def test_check_config_names_the_bad_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[dispatch]\nbatch_size = -1\n[server]\nportt = 1\n")
    result = run("check-config", "-c", str(bad))
    assert result.returncode == 1
    assert "dispatch.batch_size: Input should be greater than 0" in result.stderr
    assert "server.portt: Extra inputs are not permitted" in result.stderr


def test_check_config_validates_dispatcher_options_and_names(tmp_path):
    bad = tmp_path / "bad.toml"
    text = config_text(tmp_path, ["database", "jsonfile", "nope"])
    bad.write_text(text.replace('[dispatchers.jsonfile]', '[dispatchers.jsonfile]\ncolour = "red"'))
    result = run("check-config", "-c", str(bad))
    assert result.returncode == 1
    assert "dispatchers.jsonfile.colour" in result.stderr
    assert "no dispatcher named 'nope'" in result.stderr


def test_config_path_defaults_to_the_environment(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(config_text(tmp_path, ["database"]))
    result = run("check-config", env={"DISPATCHD_CONFIG": str(good)})
    assert result.returncode == 0 and str(good) in result.stdout
    result = run("check-config", env={"DISPATCHD_CONFIG": str(tmp_path / "missing.toml")})
    assert result.returncode == 1 and "cannot read" in result.stderr


def test_serve_refuses_an_invalid_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[spool]\nsync = 'maybe'\n")
    result = run("serve", "-c", str(bad))
    assert result.returncode == 1 and "spool.sync" in result.stderr


def test_plugins_lists_every_dispatcher_with_its_status():
    result = run("plugins")
    assert result.returncode == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "dispatchd.dispatchers.database:DatabaseDispatcher" in lines["database"]
    assert lines["database"].rstrip().endswith("loadable")
    assert "dispatchd-jsonfile" in lines["jsonfile"]
    assert "error:" in lines["broken"] and "ImportError" in lines["broken"]
    listed = {p["name"]: p for p in json.loads(run("plugins", "--json").stdout)}
    assert listed["database"]["error"] is None and listed["database"]["distribution"] == "dispatchd"
    assert "not an EventBackend subclass" in listed["notabackend"]["error"]


def test_serve_reports_a_port_in_use_and_exits_1(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "dispatchd.toml"
        config.write_text(config_text(tmp_path, ["database"], port=port))
        result = run("serve", "-c", str(config))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
