from __future__ import annotations

from pathlib import Path

import pytest

from dispatchd import config
from dispatchd.errors import ConfigError

REPO = Path(__file__).parent.parent


def test_shipped_config_is_valid_and_embedded_default():
    cfg = config.load(REPO / "config" / "dispatchd.toml")
    assert cfg.dispatch.enabled == ("database",)
    assert cfg.spool.path == "var/spool.db"
    assert cfg.dispatcher_table("database")["url"] == "sqlite:///var/events.db"
    assert "jsonfile" in cfg.dispatchers


def test_defaults_apply_to_an_empty_file():
    cfg = config.parse("")
    assert cfg.server.port == 8080 and cfg.server.max_batch == 1000
    assert cfg.spool.sync == "normal" and cfg.spool.max_events == 1_000_000
    assert cfg.dispatch.level == 20 and cfg.dispatch.exclude_derived_actions is True


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[server]\nprot = 1", "server.prot"),
        ("[spool]\nsync = 'sometimes'", "spool.sync"),
        ("[dispatch]\nbatch_size = 0", "dispatch.batch_size"),
        ("[dispatch]\nlevel = 'LOUD'", "dispatch.level"),
        ("[dispatch]\nlevel = true", "dispatch.level"),
        ("[nonsense]\na = 1", "nonsense"),
        ("[server]\nport = 70000", "server.port"),
        ("[server]\nevent_loop = 'trio'", "server.event_loop"),
    ],
)
def test_invalid_keys_are_named(text, key):
    with pytest.raises(ConfigError) as info:
        config.parse(text, "x.toml")
    assert any(p.startswith(key + ":") for p in info.value.problems), info.value.problems


def test_event_loop_defaults_to_asyncio_and_uvloop_needs_its_extra(monkeypatch):
    assert config.parse("", "x.toml").server.event_loop == "asyncio"
    assert config.parse("[server]\nevent_loop = 'uvloop'", "x.toml").server.event_loop == "uvloop"
    real = config.importlib.util.find_spec
    monkeypatch.setattr(config.importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvloop" else real(name, *a))
    with pytest.raises(ConfigError) as info:
        config.parse("[server]\nevent_loop = 'uvloop'", "x.toml")
    assert "dispatchd[uvloop]" in info.value.problems[0], info.value.problems


def test_bad_toml_is_reported():
    with pytest.raises(ConfigError) as info:
        config.parse("[server\n", "x.toml")
    assert "invalid TOML" in info.value.problems[0]


def test_unreadable_file_is_reported(tmp_path):
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path / "missing.toml")
    assert "cannot read" in info.value.problems[0]


def test_environment_references(monkeypatch):
    monkeypatch.setenv("DSP_HOST", "0.0.0.0")
    monkeypatch.delenv("DSP_UNSET", raising=False)
    cfg = config.parse(
        '[server]\nhost = "${DSP_HOST}"\nauth_tokens = ["${DSP_UNSET:-t1}", "x${DSP_HOST}y"]'
    )
    assert cfg.server.host == "0.0.0.0"
    assert cfg.server.auth_tokens == ("t1", "x0.0.0.0y")


def test_missing_environment_variable_names_the_key(monkeypatch):
    monkeypatch.delenv("DSP_UNSET", raising=False)
    with pytest.raises(ConfigError) as info:
        config.parse('[dispatchers.database]\nurl = "${DSP_UNSET}"', "x.toml")
    assert info.value.problems == [
        "dispatchers.database.url: environment variable DSP_UNSET is not set"
    ]


def test_config_is_frozen():
    cfg = config.parse("")
    with pytest.raises(Exception):  # noqa: B017  (pydantic raises ValidationError for frozen)
        cfg.server.port = 1  # type: ignore[misc]


def test_default_path_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DISPATCHD_CONFIG", "/etc/dispatchd/x.toml")
    assert config.default_path() == "/etc/dispatchd/x.toml"
    monkeypatch.delenv("DISPATCHD_CONFIG")
    assert config.default_path() == "config/dispatchd.toml"
