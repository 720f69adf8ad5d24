from __future__ import annotations

from pathlib import Path

import pytest

from dispatchd import config, validation
from dispatchd.errors import ConfigError, Problem

from .support.config import toml_text

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
    assert any(".".join(map(str, p.loc)) == key for p in info.value.problems), info.value.problems


def test_event_loop_defaults_to_asyncio_and_uvloop_needs_its_extra(monkeypatch):
    assert config.parse("", "x.toml").server.event_loop == "asyncio"
    assert config.parse("[server]\nevent_loop = 'uvloop'", "x.toml").server.event_loop == "uvloop"
    real = config.importlib.util.find_spec
    monkeypatch.setattr(config.importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvloop" else real(name, *a))
    with pytest.raises(ConfigError) as info:
        config.parse("[server]\nevent_loop = 'uvloop'", "x.toml")
    [problem] = info.value.problems
    assert problem.loc == ("server", "event_loop") and "dispatchd[uvloop]" in problem.msg


def test_instance_defaults_to_the_host_name_and_must_be_a_plain_name(monkeypatch):
    monkeypatch.setattr("socket.gethostname", lambda: "dispatchd-0")
    assert config.parse("").server.instance == "dispatchd-0"
    assert config.parse("[server]\ninstance = 'eu-west.replica_2'").server.instance == \
        "eu-west.replica_2"
    monkeypatch.setenv("POD", "dispatchd-3")
    assert config.parse("[server]\ninstance = '${POD}'").server.instance == "dispatchd-3"
    for bad in ("", "-lead", "a b", "x%s", 'q"uote', "ü", "a" * 254):
        with pytest.raises(ConfigError) as info:
            config.parse(toml_text({"server": {"instance": bad}}))
        assert [p.loc for p in info.value.problems] == [("server", "instance")], bad
    # a host name that is no instance name is reported like a bad value
    monkeypatch.setattr("socket.gethostname", lambda: "")
    with pytest.raises(ConfigError, match="server.instance"):
        config.parse("")


def test_bad_toml_is_reported():
    with pytest.raises(ConfigError) as info:
        config.parse("[server\n", "x.toml")
    assert "invalid TOML" in info.value.problems[0].msg


def test_unreadable_file_is_reported(tmp_path):
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path / "missing.toml")
    assert "cannot read" in info.value.problems[0].msg


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
        Problem(("dispatchers", "database", "url"), "environment variable DSP_UNSET is not set")
    ]
    assert str(info.value.problems[0]) == (
        "dispatchers.database.url: environment variable DSP_UNSET is not set"
    )


def test_config_is_frozen():
    cfg = config.parse("")
    with pytest.raises(Exception):  # noqa: B017  (pydantic raises ValidationError for frozen)
        cfg.server.port = 1  # type: ignore[misc]


def test_default_path_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DISPATCHD_CONFIG", "/etc/dispatchd/x.toml")
    assert config.default_path() == "/etc/dispatchd/x.toml"
    monkeypatch.delenv("DISPATCHD_CONFIG")
    assert config.default_path() == "config/dispatchd.toml"


# -- validation: every problem of a file in one pass ---------------------------------------------


def _problems(text: str, tmp_path: Path) -> dict[tuple[str | int, ...], str]:
    path = tmp_path / "d.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        validation.load(path)
    assert info.value.path == str(path)
    return {p.loc: p.msg for p in info.value.problems}


def test_validation_names_every_problem_even_when_the_general_keys_are_invalid(tmp_path):
    problems = _problems(
        "[server]\nport = 70000\n"
        "[spool]\nmax_eventz = 5\n"
        '[dispatch]\nenabled = ["message", "nope", "broken", "nodump"]\n'
        '[dispatchers.message]\nurl = "http://x/"\nlevel = "LOUD"\ntimeout = 0\n',
        tmp_path,
    )
    assert set(problems) == {
        ("server", "port"),
        ("spool", "max_eventz"),
        ("dispatchers", "message", "url"),
        ("dispatchers", "message", "level"),
        ("dispatchers", "message", "timeout"),
        ("dispatchers", "nope"),
        ("dispatchers", "broken"),
        ("dispatchers", "nodump"),
    }, problems
    assert "amqp://" in problems[("dispatchers", "message", "url")]
    assert "no dispatcher named 'nope' is installed" in problems[("dispatchers", "nope")]
    assert "failed to import" in problems[("dispatchers", "broken")]
    assert "implements neither dump() nor dump_batch()" in problems[("dispatchers", "nodump")]


def test_validation_of_plugins_alone_when_the_general_keys_are_fine(tmp_path):
    problems = _problems(
        '[dispatch]\nenabled = ["database", "jsonfile", "database"]\n'
        '[dispatchers.jsonfile]\nfsynk = true\nmax_attempts = "many"\n',
        tmp_path,
    )
    assert set(problems) == {
        ("dispatchers", "jsonfile", "fsynk"),
        ("dispatchers", "jsonfile", "max_attempts"),
        ("dispatch", "enabled"),
    }, problems


def test_validation_without_a_dispatch_table_checks_the_default_dispatcher(tmp_path):
    problems = _problems('[server]\nport = -1\n[dispatchers.database]\nurl = "mysql://x"\n',
                         tmp_path)
    assert set(problems) == {("server", "port"), ("dispatchers", "database", "url")}


def test_validation_survives_unreadable_dispatcher_sections(tmp_path):
    problems = _problems('[dispatch]\nenabled = "database"\n[dispatchers]\nmessage = 5\n',
                         tmp_path)
    assert ("dispatch", "enabled") in problems and ("dispatchers", "message") in problems


def test_validation_names_every_unset_variable_once(tmp_path, monkeypatch):
    monkeypatch.delenv("DSP_UNSET_A", raising=False)
    monkeypatch.delenv("DSP_UNSET_B", raising=False)
    problems = _problems(
        '[server]\nauth_tokens = ["${DSP_UNSET_A}"]\n'
        '[dispatchers.database]\nurl = "${DSP_UNSET_B}"\n',
        tmp_path,
    )
    assert problems == {
        ("server", "auth_tokens", 0): "environment variable DSP_UNSET_A is not set",
        ("dispatchers", "database", "url"): "environment variable DSP_UNSET_B is not set",
    }


def test_validation_of_a_good_file_returns_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("DSP_DB", f"sqlite:///{tmp_path}/e.db")
    path = tmp_path / "d.toml"
    path.write_text('[dispatch]\nenabled = ["database", "jsonfile"]\n'
                    '[dispatchers.database]\nurl = "${DSP_DB}"\ntimeout = 3\n')
    cfg = validation.load(path)
    assert cfg.dispatcher_table("database") == {"url": f"sqlite:///{tmp_path}/e.db", "timeout": 3}
    assert validation.load(REPO / "config" / "dispatchd.toml") == config.load(
        REPO / "config" / "dispatchd.toml"
    )


def test_validation_reports_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        validation.load(tmp_path / "missing.toml")
    assert list(_problems("[server\n", tmp_path)) == [()]


def test_plugin_problems_are_what_serve_warns_about():
    cfg = config.parse('[dispatch]\nenabled = ["database", "broken"]\n'
                       '[dispatchers.database]\nmax_attempts = 0\n')
    problems = validation.plugin_problems(cfg)
    assert [p.loc for p in problems] == [("dispatchers", "broken"),
                                         ("dispatchers", "database", "max_attempts")]
    assert all(isinstance(p, Problem) for p in problems)
    assert validation.plugin_problems(config.parse("")) == []


def test_a_spool_smaller_than_one_batch_is_rejected():
    # Otherwise a full-size batch would be answered 503 with Retry-After forever.
    with pytest.raises(ConfigError) as info:
        config.parse("[server]\nmax_batch = 100\n[spool]\nmax_events = 99\n")
    assert "spool.max_events (99) must be at least server.max_batch (100)" in str(info.value)
