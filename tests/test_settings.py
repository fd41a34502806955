"""Executor settings: one dataclass lists them with their defaults; the Executor's keyword
arguments, the profiles' keys, the SSH options, the command line and the adapters follow it."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import hpcexec
from hpcexec import ExecutorSettings, config
from hpcexec.errors import ConfigError
from hpcexec.remote import SSHOptions
from hpcexec.settings import DEFAULTS, NAMES, REACH

FIELDS = dataclasses.fields(ExecutorSettings)


def test_the_setting_names_are_listed_once_as_the_fields():
    assert tuple(f.name for f in FIELDS) == NAMES
    assert {f.name: f.default for f in FIELDS} == DEFAULTS
    assert all(f.metadata["doc"] for f in FIELDS)
    assert REACH == ("python", "remote_dir", "ssh_key", "known_hosts", "trust_on_first_use")
    assert hpcexec.ExecutorSettings is ExecutorSettings


def test_the_executors_setting_parameters_are_exactly_the_fields():
    params = inspect.signature(hpcexec.Executor.__init__).parameters
    settings = {
        name
        for name, p in params.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in ("self", "profile")
    }
    assert settings == set(NAMES)
    keyword_only = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    assert keyword_only == set(NAMES) - {"backend"} | {"profile"}
    assert all(params[n].default is None for n in NAMES)  # None: not given, so the profile's


def test_ssh_options_are_settings():
    names = [f.name for f in dataclasses.fields(SSHOptions)]
    assert set(names) <= set(REACH)
    s = ExecutorSettings(host="h", ssh_key="/k", known_hosts="/kh", remote_dir="~/r")
    assert SSHOptions.of(s) == SSHOptions("~/r", "/k", "/kh", False)


def test_resolution_gives_every_setting(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)}
    s = config.resolve("", {"coalesce": 0.0}, cwd=tmp_path, environ=env)
    assert tuple(s.values) == NAMES
    assert s.effective() == ExecutorSettings(coalesce=0.0)
    with pytest.raises(ConfigError, match="valid: " + ", ".join(NAMES)):
        config.resolve("", {"colesce": 1.0}, cwd=tmp_path, environ=env)


def test_a_profile_may_hold_every_setting_and_no_other(tmp_path):
    (tmp_path / "hpcexec.toml").write_text('[profiles.p]\ncoalesce = 0.5\nhots = "x"\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)}
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path, env)
    assert "valid keys: " + ", ".join([*NAMES, "description", "resources"]) in str(info.value)


def test_the_session_is_opened_with_the_effective_settings(cache, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    with hpcexec.Executor(cache_dir=cache, coalesce=0.0, profile="") as ex:
        assert ex.session.settings == ExecutorSettings(cache_dir=cache, coalesce=0.0)


def test_the_joblib_backend_knows_the_executors_own_arguments():
    pytest.importorskip("joblib")
    from hpcexec.adapters.joblib import EXECUTOR_ARGS

    assert {*NAMES, "profile"} == EXECUTOR_ARGS
