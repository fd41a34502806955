"""Writing a profile from code (hpcexec.save_profile), read back as an Executor reads it."""

from __future__ import annotations

import datetime as dt
import stat

import pytest

import hpcexec
from hpcexec import config
from hpcexec.errors import ConfigError

KEPT = """\
# my clusters
default_profile = "old"

[profiles.old]  # the first one
backend = "local"
"""


def test_a_profile_written_from_code_is_what_the_executor_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    cache = tmp_path / "cache"
    path = hpcexec.save_profile(
        "fast",
        description="two threads",
        backend="local",
        cache_dir=cache,
        threads=2,
        time=dt.timedelta(minutes=90),
    )
    assert path == tmp_path / "home" / ".config" / "hpcexec" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    monkeypatch.chdir(tmp_path)
    chosen = config.resolve(profile="fast")
    assert chosen["backend"] == "local" and chosen["cache_dir"] == str(cache)
    assert {k: s.value for k, s in chosen.resources.items()} == {"threads": 2, "time": "01:30:00"}
    with hpcexec.Executor(profile="fast") as ex:
        assert ex.session.cache_dir == cache
        assert ex.submit_shell("echo {threads}").result(timeout=60).stdout == "2\n"


def test_the_rest_of_the_file_and_its_comments_are_kept(tmp_path):
    path = tmp_path / "hpcexec.toml"
    path.write_text(KEPT)
    hpcexec.save_profile("new", path=path, backend="slurm", queue="debug")
    hpcexec.save_profile("new", path=path, backend="sge", default=True)  # replaced whole
    text = path.read_text()
    assert text.startswith(KEPT.replace('"old"', '"new"'))  # comments, order, the old one
    files = config.parse(text, path)
    profiles, default = files
    assert default is not None and default.value == "new"
    assert profiles["new"].values == {"backend": "sge"} and profiles["new"].resources == {}
    assert profiles["old"].values == {"backend": "local"}


def test_what_a_profile_cannot_hold_is_refused_and_nothing_written(tmp_path):
    path = tmp_path / "hpcexec.toml"
    path.write_text(KEPT)
    with pytest.raises(ConfigError, match="force is neither an Executor setting nor a resource"):
        hpcexec.save_profile("x", path=path, force=True)
    with pytest.raises(ConfigError, match="backend must be one of"):
        hpcexec.save_profile("x", path=path, backend="nosuch")
    with pytest.raises(ConfigError, match="bad value 'soon' for resource 'time'"):
        hpcexec.save_profile("x", path=path, time="soon")
    with pytest.raises(ConfigError, match="cannot be written to a TOML file"):
        hpcexec.save_profile("x", path=path, queue=object())
    assert path.read_text() == KEPT
