from __future__ import annotations

import pytest

from dispatchd import config, registry
from dispatchd.dispatchers.database import DatabaseDispatcher, DatabaseOptions
from dispatchd.errors import PluginError


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


def test_resolve_validates_options_and_the_common_level():
    cfg = config.parse('[dispatchers.database]\nurl = "sqlite:///x.db"\nlevel = "warning"')
    spec = registry.resolve("database", cfg)
    assert spec.cls is DatabaseDispatcher and spec.level == 30
    assert isinstance(spec.options, DatabaseOptions)
    assert isinstance(spec.build(), DatabaseDispatcher)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('url = "mysql://x"', "dispatchers.database.url"),
        ('bogus = 1', "dispatchers.database.bogus"),
        ('level = "LOUD"', "dispatchers.database.level"),
    ],
)
def test_bad_options_name_the_key(table, message):
    cfg = config.parse(f"[dispatchers.database]\n{table}")
    with pytest.raises(PluginError, match=message.replace(".", r"\.")):
        registry.resolve("database", cfg)


def test_options_for_a_plugin_without_options_are_rejected():
    cfg = config.parse("[dispatchers.failing]\nx = 1")
    with pytest.raises(PluginError, match="takes no options"):
        registry.resolve("failing", cfg)


def test_unknown_dispatcher():
    with pytest.raises(PluginError, match="no dispatcher named 'nope'"):
        registry.resolve("nope", config.parse(""))


def test_check_lists_every_problem():
    cfg = config.parse(
        '[dispatch]\nenabled = ["database", "nope", "broken", "database"]\n'
        '[dispatchers.jsonfile]\npathh = "x"\n'
        '[dispatchers.notinstalled]\nanything = 1\n'
    )
    problems = registry.check(cfg)
    text = "\n".join(problems)
    assert "no dispatcher named 'nope'" in text
    assert "'broken'" in text
    assert "dispatchers.jsonfile.pathh" in text
    assert "named twice" in text
    assert "notinstalled" not in text  # a table for a plugin installed later is fine


def test_a_broken_plugin_that_is_not_enabled_does_not_block_the_config():
    cfg = config.parse('[dispatch]\nenabled = ["database"]\n[dispatchers.broken]\nx = 1\n')
    assert registry.check(cfg) == []
    cfg = config.parse('[dispatch]\nenabled = ["database", "broken"]\n')
    assert "failed to import" in registry.check(cfg)[0]
