"""Profiles: TOML files, selection, precedence, and errors that name the file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import hpcexec
from hpcexec import config
from hpcexec.errors import ConfigError

PROJECT = """\
default_profile = "small"

[profiles.small]
description = "quick jobs here"
cache_dir = "{cache}"
poll_interval = 0.05
[profiles.small.resources]
time = "0:05:00"
mem = "1GB"
threads = 1

[profiles.cluster-a]
backend = "slurm"
host = "cluster-a"
python = "~/venvs/sim/bin/python"
remote_dir = "~/jobs"
trust_on_first_use = true
resources = {{ queue = "debug", native = ["--exclusive"] }}
"""


@pytest.fixture
def where(tmp_path, monkeypatch):
    """A project directory and a user config directory, nothing from the real machine."""
    project = tmp_path / "project"
    project.mkdir()
    xdg = tmp_path / "xdg"
    (xdg / "hpcexec").mkdir(parents=True)
    monkeypatch.chdir(project)
    env = {"XDG_CONFIG_HOME": str(xdg), "HOME": str(tmp_path / "home")}
    monkeypatch.delenv(config.ENV_PROFILE, raising=False)
    monkeypatch.delenv(config.ENV_CACHE_DIR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    return project, xdg / "hpcexec" / "config.toml", env


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_profile_values_and_their_sources(where, tmp_path):
    project, _user, env = where
    write(project / "hpcexec.toml", PROJECT.format(cache=tmp_path / "c"))
    s = config.resolve("cluster-a", {"host": "other"}, cwd=project, environ=env)
    assert s.profile == "cluster-a" and s.profile_source == "argument"
    assert s["backend"] == "slurm"
    assert s.values["backend"].source == f"{project / 'hpcexec.toml'}:13"
    assert s.values["host"] == config.Setting("other", "argument")  # explicit wins
    assert s["python"] == "~/venvs/sim/bin/python"  # a path on that host: not expanded here
    assert s["trust_on_first_use"] is True
    assert s.values["coalesce"] == config.Setting(0.2, "default")
    assert {k: v.value for k, v in s.resources.items()} == {
        "queue": "debug",
        "native": ["--exclusive"],
    }
    assert s.resources["queue"].source.endswith("hpcexec.toml:18")  # the inline table's line


def test_selection_order(where, tmp_path, monkeypatch):
    project, _user, env = where
    write(project / "hpcexec.toml", PROJECT.format(cache=tmp_path / "c"))
    s = config.resolve(cwd=project, environ=env)
    assert s.profile == "small" and s.profile_source.endswith("hpcexec.toml:1")
    s = config.resolve(cwd=project, environ={**env, "HPCEXEC_PROFILE": "cluster-a"})
    assert (s.profile, s.profile_source) == ("cluster-a", "env HPCEXEC_PROFILE")
    s = config.resolve("", cwd=project, environ={**env, "HPCEXEC_PROFILE": "cluster-a"})
    assert s.profile is None and s["backend"] == "local" and not s.resources
    s = config.resolve(cwd=project, environ={**env, "HPCEXEC_PROFILE": ""})
    assert s.profile is None


def test_environment_cache_dir_between_argument_and_profile(where, tmp_path):
    project, _user, env = where
    write(project / "hpcexec.toml", PROJECT.format(cache=tmp_path / "c"))
    env = {**env, "HPCEXEC_CACHE_DIR": "~/from-env"}
    s = config.resolve("small", cwd=project, environ=env)
    assert s.values["cache_dir"] == config.Setting(
        str(Path.home() / "from-env"), "env HPCEXEC_CACHE_DIR"
    )
    s = config.resolve("small", {"cache_dir": "given"}, cwd=project, environ=env)
    assert s["cache_dir"] == "given"


def test_project_file_wins_over_user_file_per_profile(where):
    project, user, env = where
    write(
        user,
        """\
        [profiles.a]
        backend = "sge"
        [profiles.b]
        backend = "lsf"
        """,
    )
    write(
        project / "hpcexec.toml",
        """\
        [profiles.a]
        backend = "slurm"
        """,
    )
    files = config.load(project, env)
    assert files.found == (project / "hpcexec.toml", user)
    assert files.profiles["a"].values == {"backend": "slurm"}
    assert files.profiles["b"].values == {"backend": "lsf"}
    assert config.resolve("b", cwd=project, environ=env).values["backend"].source == f"{user}:4"


def test_user_file_under_home_without_xdg(tmp_path):
    home = tmp_path / "home"
    write_to = home / ".config" / "hpcexec" / "config.toml"
    write_to.parent.mkdir(parents=True)
    write(write_to, '[profiles.x]\nbackend = "slurm"\n')
    files = config.load(tmp_path, {"HOME": str(home)})
    assert files.found == (write_to,) and "x" in files.profiles


@pytest.mark.parametrize(
    "text, line, words",
    [
        (
            '[profiles.a]\nbackend = "slurm"\nqueue = "debug"\n',
            3,
            ["unknown key 'queue' in profile 'a'", "resources"],
        ),
        (
            '[profiles.a]\n[profiles.a.resources]\ntime = "1:00:00"\nmemory = "4GB"\n',
            4,
            ["unknown resource 'memory'", "mem"],
        ),
        ('[profiles.a]\nresources.mem = "lots"\n', 2, ["bad value 'lots' for resource 'mem'"]),
        ('[profiles.a]\nbackend = "slurmm"\n', 2, ["must be one of local, slurm"]),
        ("[profiles.a]\npoll_interval = -1\n", 2, ["positive number"]),
        ('[profile.a]\nbackend = "slurm"\n', 1, ["unknown key 'profile'"]),
        ('[profiles.a]\ntrust_on_first_use = "yes"\n', 2, ["true or false"]),
        ("[profiles]\na = 3\n", 2, ["profile 'a' must be a table"]),
    ],
)
def test_bad_files_name_file_line_and_fix(where, text, line, words):
    project, _user, env = where
    path = write(project / "hpcexec.toml", text)
    with pytest.raises(ConfigError) as e:
        config.load(project, env)
    assert str(e.value).startswith(f"{path}:{line}: ")
    for w in words:
        assert w in str(e.value)


def test_invalid_toml_and_unknown_profile(where):
    project, _user, env = where
    path = write(project / "hpcexec.toml", "[profiles.a]\nbackend = slurm\n")
    with pytest.raises(ConfigError, match=rf"^{path}: not valid TOML: .*line 2"):
        config.load(project, env)
    write(project / "hpcexec.toml", '[profiles.a]\nbackend = "slurm"\n')
    with pytest.raises(ConfigError, match=r"no profile 'b' .*profiles there: a"):
        config.resolve("b", cwd=project, environ=env)
    (project / "hpcexec.toml").unlink()
    with pytest.raises(
        ConfigError,
        match="no profile 'b' \\(from env HPCEXEC_PROFILE\\): no configuration file found",
    ):
        config.resolve(cwd=project, environ={**env, "HPCEXEC_PROFILE": "b"})


def test_executor_takes_its_profile(where, tmp_path):
    project, _user, _env = where
    write(project / "hpcexec.toml", PROJECT.format(cache=tmp_path / "c"))
    with hpcexec.Executor(profile="small") as ex:
        assert ex.cache_dir == tmp_path / "c"
        assert ex.resources.time == 300 and ex.resources.mem == 1024
        assert ex.session.poll_interval == 0.05
        assert ex.options(time="0:01:00").resources.time == 60
        assert ex.submit_shell("echo profiled").result().stdout == "profiled\n"
    with hpcexec.Executor(cache_dir=tmp_path / "d", mem="2GB") as ex:  # default_profile
        assert ex.cache_dir == tmp_path / "d"  # the argument wins
        assert ex.resources.mem == 2048 and ex.resources.time == 300
    with hpcexec.Executor(profile="", cache_dir=tmp_path / "e") as ex:
        assert ex.resources.time is None


def test_executor_refuses_a_bad_profile(where):
    project, _user, _env = where
    write(project / "hpcexec.toml", '[profiles.a]\nbackend = "slurm"\nqueue = "x"\n')
    with pytest.raises(ConfigError, match=r"hpcexec.toml:3: unknown key 'queue'"):
        hpcexec.Executor(profile="a")
