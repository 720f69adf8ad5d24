from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import aiohttp
import pytest
from pydantic import BaseModel

from dispatchd import EventBackend, Record, config, registry
from dispatchd.dispatchers.database import DatabaseDispatcher, DatabaseOptions
from dispatchd.errors import PluginError, Problem

from .support import TESTPLUGINS
from .support.daemon import DISPATCHD, Daemon

NODUMP = "implements neither dump() nor dump_batch()"


def test_builtins_and_plugins_are_discovered_through_entry_points():
    found = registry.discover()
    assert found["database"].value == "dispatchd.dispatchers.database:DatabaseDispatcher"
    assert found["jsonfile"].value == "dispatchd_jsonfile:JsonDispatcher"
    assert registry.load(found["database"]) is DatabaseDispatcher


def test_inspect_all_reports_broken_plugins_and_loads_the_rest():
    infos = {info.name: info for info in registry.inspect_all()}
    assert infos["database"].error is None and infos["database"].distribution == "dispatchd"
    assert infos["jsonfile"].error is None
    assert "failed to import" in (infos["broken"].error or "")
    assert "ImportError" in (infos["broken"].error or "")
    assert "not an EventBackend subclass" in (infos["notabackend"].error or "")
    assert infos["nodump"].error == (
        f"dispatcher 'nodump' (dispatchd_testplugins:NoDump) {NODUMP}"
    )


def test_a_backend_without_dump_or_dump_batch_is_rejected_when_loaded():
    with pytest.raises(PluginError, match=r"'nodump' .*implements neither dump\(\) nor dump_batch"):
        registry.load(registry.discover()["nodump"])
    with pytest.raises(PluginError, match="implements neither"):
        registry.resolve("nodump", config.parse(""))


def test_dispatchd_plugins_shows_the_missing_dump():
    env = {**os.environ, "PYTHONPATH": str(TESTPLUGINS)}
    out = subprocess.run([str(DISPATCHD), "plugins", "--json"], env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    infos = {info["name"]: info for info in json.loads(out)}
    assert NODUMP in infos["nodump"]["error"]
    assert infos["slow"]["error"] is None  # dump_batch alone is enough


def test_resolve_validates_options_and_the_common_keys():
    cfg = config.parse(
        '[dispatchers.database]\nurl = "sqlite:///x.db"\nlevel = "warning"\n'
        "timeout = 2.5\nmax_attempts = 4\n"
    )
    spec = registry.resolve("database", cfg)
    assert spec.cls is DatabaseDispatcher
    assert spec.overrides == registry.Overrides(level=30, timeout=2.5, max_attempts=4)
    assert registry.overrides(cfg, "database") == spec.overrides
    assert spec.options == DatabaseOptions(url="sqlite:///x.db")  # common keys never reach it
    assert isinstance(spec.build(), DatabaseDispatcher)


def test_no_overrides_means_the_global_values():
    assert registry.overrides(config.parse(""), "database") == registry.Overrides(None, None, None)


@pytest.mark.parametrize(
    ("table", "loc"),
    [
        ('url = "mysql://x"', ("dispatchers", "database", "url")),
        ("bogus = 1", ("dispatchers", "database", "bogus")),
        ('level = "LOUD"', ("dispatchers", "database", "level")),
        ("timeout = 0", ("dispatchers", "database", "timeout")),
        ('timeout = "soon"', ("dispatchers", "database", "timeout")),
        ("max_attempts = 0", ("dispatchers", "database", "max_attempts")),
        ("max_attempts = 1.5", ("dispatchers", "database", "max_attempts")),
    ],
)
def test_bad_options_name_the_key(table, loc):
    cfg = config.parse(f"[dispatchers.database]\n{table}")
    with pytest.raises(PluginError, match=".".join(loc).replace(".", r"\.")):
        registry.resolve("database", cfg)
    [problem] = registry.check(cfg)
    assert problem.loc == loc


def test_every_problem_of_a_table_at_once():
    cfg = config.parse('[dispatchers.database]\nlevel = "LOUD"\ntimeout = -1\nbogus = 1\n')
    locs = {p.loc[-1] for p in registry.check(cfg)}
    assert locs == {"level", "timeout", "bogus"}
    with pytest.raises(PluginError) as info:
        registry.overrides(cfg, "database")
    assert "dispatchers.database.level" in str(info.value)
    assert "dispatchers.database.timeout" in str(info.value)


def test_options_for_a_plugin_without_options_are_rejected():
    cfg = config.parse("[dispatchers.failing]\nx = 1\nmax_attempts = 2")
    assert registry.check(cfg) == [
        Problem(("dispatchers", "failing", "x"), "dispatcher 'failing' takes no options")
    ]
    with pytest.raises(PluginError, match="takes no options"):
        registry.resolve("failing", cfg)


def test_unknown_dispatcher():
    with pytest.raises(PluginError, match="no dispatcher named 'nope'"):
        registry.resolve("nope", config.parse(""))


def test_check_lists_every_problem():
    cfg = config.parse(
        '[dispatch]\nenabled = ["database", "nope", "broken", "nodump", "database"]\n'
        '[dispatchers.jsonfile]\npathh = "x"\n'
        '[dispatchers.notinstalled]\nanything = 1\n'
    )
    problems = {p.loc: p.msg for p in registry.check(cfg)}
    assert "no dispatcher named 'nope'" in problems[("dispatchers", "nope")]
    assert "failed to import" in problems[("dispatchers", "broken")]
    assert NODUMP in problems[("dispatchers", "nodump")]
    assert "Extra inputs" in problems[("dispatchers", "jsonfile", "pathh")]
    assert problems[("dispatch", "enabled")] == "dispatcher 'database' is named twice"
    assert not any("notinstalled" in str(loc) for loc in problems)  # installed later: fine


def test_a_broken_plugin_that_is_not_enabled_does_not_block_the_config():
    cfg = config.parse('[dispatch]\nenabled = ["database"]\n[dispatchers.broken]\nx = 1\n')
    assert registry.check(cfg) == []
    cfg = config.parse('[dispatch]\nenabled = ["database", "broken"]\n')
    [problem] = registry.check(cfg)
    assert problem.loc == ("dispatchers", "broken") and "failed to import" in problem.msg


# -- EventBackend is generic over its options --------------------------------------------------


class Opts(BaseModel):
    path: str = "p"


def test_the_type_argument_sets_options():
    class Typed(EventBackend[Opts]):
        async def dump_batch(self, events: list[Record]) -> None:
            pass

    assert Typed.Options is Opts
    assert Typed("t", Opts(path="x")).options.path == "x"
    assert Typed("t").options == Opts()  # defaults when none are given
    assert DatabaseDispatcher.Options is DatabaseOptions


def test_an_explicit_options_still_works_and_is_inherited():
    class Explicit(EventBackend):
        Options = Opts

        def dump(self, level: int, action: Any, **kwargs: Any) -> None:
            pass

    class Narrower(Opts):
        extra_key: int = 1

    class Both(EventBackend[Opts]):
        Options = Narrower

    class Child(Explicit):
        pass

    assert Explicit.Options is Opts and Child.Options is Opts and Both.Options is Narrower
    assert EventBackend.Options is None and EventBackend("plain").options is None


def test_options_that_contradict_the_type_argument_fail_at_definition():
    class Other(BaseModel):
        pass

    with pytest.raises(TypeError, match=r"declared EventBackend\[Opts\]"):
        class Wrong(EventBackend[Opts]):  # noqa: F841
            Options = Other


# -- the real daemon shows a dispatcher without dump as failed, with why ---------------------------


async def test_the_daemon_reports_a_dispatcher_without_dump_as_failed(tmp_path):
    daemon = Daemon(tmp_path, ["jsonfile", "nodump"])
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            states = await daemon.dispatchers(session)
    finally:
        daemon.kill()
    assert states["jsonfile"]["state"] in ("starting", "running")
    assert states["nodump"]["state"] == "failed"
    assert NODUMP in states["nodump"]["last_error"]


def test_a_reload_applies_the_common_keys_live_and_restarts_for_options():
    from dispatchd.reload import plan

    def database(table: str) -> config.Config:
        return config.parse(f'[dispatch]\nenabled = ["database"]\n[dispatchers.database]\n{table}')

    old = database('url = "sqlite:///a.db"')
    live = database('url = "sqlite:///a.db"\nlevel = "ERROR"\ntimeout = 2\nmax_attempts = 1')
    assert plan(old, live, set()).restart == ()  # the worker's policy changes, not the instance
    assert plan(old, database('url = "sqlite:///b.db"'), set()).restart == ("database",)
