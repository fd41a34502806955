"""Profiles from the command line: selection, precedence, `hpcexec config`, bad files."""

from __future__ import annotations

import textwrap

PROJECT = """\
[profiles.fast]
description = "short local jobs"
cache_dir = "cache-fast"
[profiles.fast.resources]
time = "0:02:00"
mem = "1GB"

[profiles.broken-free]
backend = "local"
"""


def test_config_shows_each_value_and_where_it_came_from(cli):
    toml = cli.cwd / "hpcexec.toml"
    toml.write_text(PROJECT)
    data = cli.json("--profile", "fast", "config")
    assert (data["profile"], data["profile_from"]) == ("fast", "--profile")
    assert data["settings"]["cache_dir"] == {"value": "cache-fast", "from": f"{toml}:3"}
    assert data["settings"]["backend"] == {"value": "local", "from": "default"}
    assert data["resources"]["time"] == {"value": "0:02:00", "from": f"{toml}:5"}
    assert data["profiles"]["fast"]["description"] == "short local jobs"
    assert [f["found"] for f in data["files"]] == [True, False]
    data = cli.json("config", "--cache-dir", "elsewhere", HPCEXEC_PROFILE="fast")
    assert data["profile_from"] == "env HPCEXEC_PROFILE"
    assert data["settings"]["cache_dir"] == {"value": "elsewhere", "from": "--cache-dir"}
    data = cli.json("--profile", "fast", "config", HPCEXEC_CACHE_DIR="/tmp/from-env")
    assert data["settings"]["cache_dir"] == {
        "value": "/tmp/from-env",
        "from": "env HPCEXEC_CACHE_DIR",
    }
    text = cli("--profile", "fast", "config").out
    assert ["resources.mem", "1GB", f"{toml}:6"] in [row.split() for row in text.splitlines()]
    assert cli.json("config")["profile"] is None


def test_a_profile_sets_cache_and_resources_and_arguments_override(cli):
    (cli.cwd / "hpcexec.toml").write_text(PROJECT)
    job = cli.json("--profile", "fast", "submit", "--", "echo from profile")[0]
    assert job["resources"]["time"] == 120 and job["resources"]["mem"] == 1024
    assert job["jobdir"].startswith(str(cli.cwd / "cache-fast"))
    job = cli.json("--profile", "fast", "submit", "--time", "1", "--", "echo override")[0]
    assert job["resources"]["time"] == 60 and job["resources"]["mem"] == 1024
    assert len(cli.json("jobs", HPCEXEC_PROFILE="fast")) == 2
    assert cli.json("jobs") == []  # no profile: ./.hpcexec, where nothing ran
    cli("--profile", "fast", "wait", job["key"])


def test_user_profiles_and_default_profile(cli, tmp_path):
    user = tmp_path / "xdg" / "hpcexec" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('default_profile = "mine"\n[profiles.mine]\ncache_dir = "user-cache"\n')
    data = cli.json("config")
    assert (data["profile"], data["profile_from"]) == ("mine", f"{user}:1")
    assert data["settings"]["cache_dir"]["value"] == "user-cache"
    assert cli.json("--profile", "", "config")["profile"] is None


def test_bad_profiles_are_errors_naming_file_and_line(cli):
    toml = cli.cwd / "hpcexec.toml"
    toml.write_text(
        textwrap.dedent("""\
        [profiles.a]
        backend = "slurm"
        partition = "debug"
        """)
    )
    line = cli.error("jobs")
    assert line.startswith(f"hpcexec: error: {toml}:3: unknown key 'partition' in profile")
    toml.write_text('[profiles.a]\n[profiles.a.resources]\nmem = "much"\n')
    line = cli.error("--profile", "a", "submit", "--", "true")
    assert f"{toml}:3:" in line and "bad value 'much' for resource 'mem'" in line
    toml.write_text('[profiles.a]\nbackend = "local"\n')
    line = cli.error("--profile", "b", "config")
    assert "no profile 'b' (from --profile)" in line and "profiles there: a" in line
