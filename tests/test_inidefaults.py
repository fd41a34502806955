"""clusterjob's INI defaults (hpcexec.read_defaults) as an Executor's keyword arguments."""

from __future__ import annotations

import logging
import textwrap

import pytest

import hpcexec
from hpcexec.errors import ConfigError

CLUSTERJOB_INI = """\
[Attributes]
remote = login.cluster.edu
backend = pbs
rootdir = ~/jobs
prologue =
    ssh {remote} 'mkdir -p {rootdir}'
epilogue = echo done {text}
shell = /bin/bash
text = Hello World

[Resources]
jobname = sweep
queue = exec
nodes = 1
threads = 4
mem = 1000
native =
    -l arch=lx-amd64
    -P myproject
"""


def test_clusterjobs_example_maps_to_the_executors_keywords(tmp_path, caplog):
    ini = tmp_path / "cluster.ini"
    ini.write_text(CLUSTERJOB_INI)
    with caplog.at_level(logging.WARNING, logger="hpcexec.inidefaults"):
        kw = hpcexec.read_defaults(ini)
    assert kw == {
        "host": "login.cluster.edu",
        "backend": "torque",  # clusterjob's "pbs"
        "remote_dir": "~/jobs",
        "prologue": "ssh {remote} 'mkdir -p {rootdir}'",
        "epilogue": "echo done {text}",
        "vars": {
            "remote": "login.cluster.edu",
            "backend": "pbs",  # as the user's texts knew it
            "rootdir": "~/jobs",
            "text": "Hello World",
        },
        "name": "sweep",
        "queue": "exec",
        "nodes": "1",
        "threads": "4",
        "mem": "1000",
        "native": ["-l arch=lx-amd64", "-P myproject"],
    }
    assert "dropped the clusterjob attributes shell" in caplog.text


def test_an_executor_runs_with_them_and_fills_the_users_values(tmp_path):
    ini = tmp_path / "local.ini"
    ini.write_text(
        textwrap.dedent(
            f"""\
            [Attributes]
            cache_folder = {tmp_path / "cache"}
            text = Hello World
            [Resources]
            jobname = greet
            threads = 1
            """
        )
    )
    with hpcexec.Executor(**hpcexec.read_defaults(ini)) as ex:
        f = ex.submit_shell("echo {text} from {name}")
        assert f.result(timeout=60).stdout == "Hello World from greet\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("[Other]\nx = 1\n", r"\[Attributes\] or a \[Resources\].*found \[Other\]"),
        ("", r"\[Attributes\] or a \[Resources\]"),
        ("no section\n", "is not an INI file"),
        ("[Resources]\nfrobs = 2\n", "frobs is no resource of hpcexec's"),
        ("[Attributes]\n2x = 1\n", "key '2x' must be a name"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path, text, message):
    ini = tmp_path / "bad.ini"
    ini.write_text(text)
    with pytest.raises(ConfigError, match=message):
        hpcexec.read_defaults(ini)
    with pytest.raises(ConfigError, match="cannot read the INI defaults"):
        hpcexec.read_defaults(tmp_path / "missing.ini")
