"""The ``dispatchd`` command, run as a subprocess like an operator would."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
from pathlib import Path

from dispatchd import __version__, cli

from .support import TESTPLUGINS
from .support.config import config_data, write_config
from .support.daemon import DISPATCHD, free_port

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
    bad = write_config(tmp_path / "bad.toml", config_data(
        tmp_path, ["database", "jsonfile", "nope"], dispatchers={"jsonfile": {"colour": "red"}}))
    result = run("check-config", "-c", str(bad))
    assert result.returncode == 1
    assert "dispatchers.jsonfile.colour" in result.stderr
    assert "no dispatcher named 'nope'" in result.stderr


def test_config_path_defaults_to_the_environment(tmp_path):
    good = write_config(tmp_path / "good.toml", config_data(tmp_path, ["database"]))
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
        config = write_config(tmp_path / "dispatchd.toml", config_data(tmp_path, ["database"], port))
        result = run("serve", "-c", str(config))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


# -- help, version, options ----------------------------------------------------------------------

COMMANDS = {"serve", "check-config", "status", "reload", "dead-letters", "events", "plugins"}


def registered_commands() -> dict[str, argparse.ArgumentParser]:
    subparsers = next(a for a in cli._parser()._actions
                      if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


def test_help_describes_the_tool_and_lists_every_command_with_a_line():
    result = run("--help")
    assert result.returncode == 0
    assert "event-dispatch daemon" in result.stdout and "$DISPATCHD_CONFIG" in result.stdout
    listed = dict(re.findall(r"^ {4}([a-z-]+) +(\S.*)$", result.stdout, re.MULTILINE))
    assert set(listed) == set(registered_commands()) == COMMANDS
    for name in COMMANDS:
        sub = run(name, "--help")
        assert sub.returncode == 0, sub.stderr
        description = sub.stdout.split("\n\n")[1]  # usage, then the description paragraph
        assert len(description.split()) >= 5 and not description.startswith("options"), name
    for action in ("list", "replay", "purge"):
        assert run("dead-letters", action, "--help").returncode == 0
    assert run("events", "show", "--help").returncode == 0


def test_version():
    for flag in ("-V", "--version"):
        result = run(flag)
        assert result.returncode == 0 and result.stdout.strip() == f"dispatchd {__version__}"


def test_log_level_before_or_after_the_command_and_the_later_wins():
    parse = cli._parser().parse_args
    assert parse(["--log-level", "debug", "status"]).log_level == "DEBUG"
    assert parse(["status", "--log-level", "DEBUG"]).log_level == "DEBUG"
    assert parse(["--log-level", "ERROR", "dead-letters", "list"]).log_level == "ERROR"
    assert parse(["--log-level", "ERROR", "serve", "--log-level", "WARNING"]).log_level == "WARNING"
    assert not hasattr(parse(["serve"]), "log_level")  # so that the config's [log] level applies
    assert run("status", "--log-level", "LOUD").returncode == 2


def test_check_config_prints_every_problem_one_per_line_and_as_json(tmp_path):
    bad = write_config(tmp_path / "bad.toml", config_data(
        tmp_path, ["database", "jsonfile"], 70000, dispatchers={"jsonfile": {"colour": "red"}}))
    result = run("check-config", "-c", str(bad))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"dispatchd: invalid config {bad} (2 problem(s)):"
    assert lines[1].startswith("server.port: Input should be less than or equal to 65535")
    assert lines[2] == "dispatchers.jsonfile.colour: Extra inputs are not permitted"
    result = run("check-config", "--json", "-c", str(bad))
    assert result.returncode == 1
    assert json.loads(result.stdout) == [
        {"loc": ["server", "port"], "msg": "Input should be less than or equal to 65535"},
        {"loc": ["dispatchers", "jsonfile", "colour"], "msg": "Extra inputs are not permitted"},
    ]
    good = write_config(tmp_path / "good.toml", config_data(tmp_path, ["database"]))
    result = run("check-config", "--json", "-c", str(good))
    assert result.returncode == 0 and json.loads(result.stdout) == []


def test_status_without_a_daemon_says_which_address_it_tried_and_why(tmp_path):
    port = free_port()
    config = write_config(tmp_path / "dispatchd.toml", config_data(tmp_path, ["database"], port))
    for args in (["status"], ["reload"], ["dead-letters", "list"]):
        result = run(*args, "-c", str(config))
        assert result.returncode == 1
        assert (f"dispatchd: no running dispatchd holds spool {tmp_path}/spool.db, so tried the "
                f"address in the config: http://127.0.0.1:{port} — connection refused"
                ) in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_tables_cut_the_last_column_to_the_terminal_and_numbers_read_well(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "50")
    cli._print_table(["NAME", "COUNT", "LAST ERROR"], [["database", "1,200", "x" * 100]], numeric={1})
    header, row = capsys.readouterr().out.splitlines()
    assert header == "NAME      COUNT  LAST ERROR"
    assert row.startswith("database  1,200  xxx") and row.endswith("…") and len(row) == 50
    assert [cli._lag(s) for s in (None, 0, 9.94, 75, 3 * 3600 + 120, 50 * 3600)] == [
        "-", "0.0s", "9.9s", "1m15s", "3h02m", "2d02h"]
    assert cli._bytes(512) == "512 B" and cli._bytes(64 * 1024 * 1024) == "64.0 MiB"
    assert cli._when("2026-12-02T18:30:00.123456Z") == "2026-12-02T18:30:00Z"
    assert cli._when(0) == "1970-01-01T00:00:00Z"
