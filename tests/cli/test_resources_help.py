"""``hpcexec resources`` (hpcexec/cli/resources.py), called directly: its rows must be the
resource table and each backend's own rendering, for every key and every backend."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from hpcexec.backends import SCHEDULERS
from hpcexec.backends.base import SchedulerBackend
from hpcexec.cli import resources as help_
from hpcexec.errors import BackendError
from hpcexec.resources import RESOURCE_TABLE, Resources

KEYS = list(RESOURCE_TABLE)
NAMES = ["local", *SCHEDULERS]


def _added(new: list[str], old: list[str]) -> list[str]:
    return [x for x in new if x not in old]


def test_every_key_and_every_backend_has_a_row():
    rows = help_.rows()
    assert [r.key for r in rows] == KEYS
    for r in rows:
        spec = RESOURCE_TABLE[r.key]
        assert (r.kind, r.accepts, r.example) == (spec.kind, spec.doc, spec.example)
        assert [x.backend for x in r.renderings] == NAMES


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("key", KEYS)
def test_scheduler_rendering_is_the_backends_rule_table(name, key):
    """What the help shows is what the backend's rules for the key produce, or its refusal."""
    backend = SCHEDULERS[name]()
    example = RESOURCE_TABLE[key].example
    (got,) = help_.rows(name)[KEYS.index(key)].renderings
    res = Resources.create(**{key: example})
    try:
        backend.check(res)
    except BackendError as e:
        assert got.refused == str(e) and not got.directives
        return
    rules = backend.rules_for(key)
    with_key = backend.render_rules(rules, help_.example_spec(res))
    without = backend.render_rules(rules, help_.example_spec(Resources()))
    assert list(got.directives) == _added(with_key, without)
    assert list(got.drops) == _added(without, with_key)
    assert got.refused is None


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("key", KEYS)
def test_rules_name_every_key_they_read(name, key):
    """A key changes no directive outside the rules that declare it, so the table is the
    whole truth about a key."""
    backend: SchedulerBackend = SCHEDULERS[name]()
    res = Resources.create(**{key: RESOURCE_TABLE[key].example})
    others = tuple(r for r in backend.rules if key not in r.keys)
    assert backend.render_rules(others, help_.example_spec(res)) == backend.render_rules(
        others, help_.example_spec(Resources())
    )


def test_every_new_key_is_rendered_applied_or_refused_on_every_backend():
    for row in help_.rows():
        if row.key in ("mail", "begin", "deadline", "stdin", "join_output", "soft_time"):
            for x in row.renderings:
                assert x.refused or x.directives or x.drops or x.script or x.note, (row.key, x)


def test_local_rendering():
    rows = {r.key: r.renderings[0] for r in help_.rows("local")}
    assert "no scheduler" in rows["mail"].refused
    assert rows["queue"].note.startswith("ignored")
    assert rows["begin"].note and rows["deadline"].note and rows["join_output"].note
    assert any(line.startswith("exec < /home/me/project/in.txt") for line in rows["stdin"].script)
    assert rows["nodes"].refused


def test_text_shows_every_rendering_line():
    out = io.StringIO()
    help_.print_resources(out)
    text = out.getvalue()
    for r in help_.rows():
        assert f"{r.key} ({r.kind}): {r.accepts}" in text
        for x in r.renderings:
            for line in help_.rendering_lines(x):
                assert line in text, (r.key, x.backend, line)


def test_json_is_the_rows():
    out = io.StringIO()
    help_.print_resources(out, backend="slurm", as_json=True)
    data = json.loads(out.getvalue())
    assert [d["key"] for d in data] == KEYS
    time_row = next(d for d in data if d["key"] == "time")
    assert time_row["backends"] == {
        "slurm": {
            "refused": None,
            "directives": ["#SBATCH --time=01:30:00"],
            "drops": [],
            "script": [],
            "note": None,
        }
    }
    assert json.loads(json.dumps(help_.as_data(help_.rows())))  # all of it is JSON


def test_unknown_backend_is_named():
    with pytest.raises(BackendError, match=r"unknown backend 'slrum'.*slurm"):
        help_.rows("slrum")


def test_register_adds_the_command(capsys):
    top = argparse.ArgumentParser(prog="hpcexec")
    top.add_argument("--json", action="store_true")
    sub = top.add_subparsers(dest="cmd")
    help_.register(sub)
    args = top.parse_args(["resources", "--backend", "sge", "--json"])
    assert args.cmd == "resources" and args.backend == "sge" and args.json
    assert top.parse_args(["--json", "resources"]).json  # a global --json still counts
    assert args.func(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert {d["key"]: list(d["backends"]) for d in data}["mail"] == ["sge"]


def test_register_with_the_command_lines_global_options():
    def common(parser):
        parser.add_argument("--backend", default=argparse.SUPPRESS)
        parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)

    sub = argparse.ArgumentParser(prog="hpcexec").add_subparsers(dest="cmd")
    p = help_.register(sub, common)
    args = p.parse_args(["--backend", "pbspro", "--json", "--debug"])
    assert (args.backend, args.json, args.debug) == ("pbspro", True, True)


def test_command_writes_through_the_cli_output_when_given_one():
    got = []

    class Out:
        def emit(self, data, text):
            got.append((data, text))

    class Ctx:
        out = Out()

    assert help_.cmd_resources(argparse.Namespace(backend="lsf"), Ctx()) == 0
    ((data, text),) = got
    assert data == help_.as_data(help_.rows("lsf"))
    assert text == help_.as_text(help_.rows("lsf"))


def test_the_hpcexec_command_runs_it_and_writes_no_cache(cli):
    out = cli("resources", "--json", "--backend", "sge")
    assert out.code == 0, out.err
    rows = out.json()
    assert [r["key"] for r in rows] == list(RESOURCE_TABLE)
    assert all(list(r["backends"]) == ["sge"] for r in rows)
    assert cli("--json", "resources").json() == help_.as_data(help_.rows())
    assert not (cli.cwd / ".hpcexec").exists()
