"""Unit tests for hpcexec.resources: parsing, validation and the Resources record."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import pytest

from hpcexec.backends import SCHEDULERS
from hpcexec.errors import BackendError, HpcexecError, ResourceError
from hpcexec.resources import JOB_OPTIONS, RESOURCE_TABLE, Resources, split_options
from hpcexec.resourcevalues import format_time, parse_mem, parse_time

# -- parse_time ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("5", 5 * 60),  # MM
        ("90", 90 * 60),  # MM may exceed 59
        ("05:30", 5 * 60 + 30),  # MM:SS
        ("0:45", 45),
        ("2:00:00", 2 * 3600),  # HH:MM:SS
        ("01:02:03", 3600 + 2 * 60 + 3),
        ("48:00:00", 48 * 3600),
        ("1-12", 86400 + 12 * 3600),  # D-HH
        ("0-01", 3600),
        ("2-03:04", 2 * 86400 + 3 * 3600 + 4 * 60),  # D-HH:MM
        ("1-02:03:04", 86400 + 2 * 3600 + 3 * 60 + 4),  # D-HH:MM:SS
        ("  10  ", 600),  # surrounding blanks are ignored
        (timedelta(hours=1, minutes=30), 5400),
        (timedelta(seconds=1), 1),
        (timedelta(milliseconds=1500), 2),  # rounded up, never down to a shorter limit
        (timedelta(days=3), 3 * 86400),
        (1, 60),  # int minutes
        (120, 7200),
    ],
)
def test_parse_time_accepted_formats(value, seconds):
    result = parse_time(value)
    assert result == seconds
    assert type(result) is int


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "1:2:3:4",
        "-5",
        "abc",
        "1-",
        "-1-2",
        "1:",
        ":30",
        "1-2:3:4:5",
        "1.5",
        "10m",
        "1 h",
        0,
        -3,
        "0",
        "00:00",
        "0-00:00:00",
        True,
        False,
        1.5,
        2.0,
        None,
        [1],
        timedelta(0),
        timedelta(seconds=-5),
    ],
)
def test_parse_time_refuses_bad_values(value):
    with pytest.raises(ValueError):
        parse_time(value)


def test_parse_time_error_message_shows_formats():
    with pytest.raises(ValueError, match=r"MM:SS.*HH:MM:SS.*D-HH"):
        parse_time("abc")


@pytest.mark.parametrize(
    "seconds, text",
    [(1, "00:00:01"), (3661, "01:01:01"), (86400 + 3600, "25:00:00"), (100 * 3600, "100:00:00")],
)
def test_format_time(seconds, text):
    assert format_time(seconds) == text


def test_format_time_round_trips_through_parse_time():
    for seconds in (1, 59, 60, 3599, 3600, 86399, 86400, 3 * 86400 + 17):
        assert parse_time(format_time(seconds)) == seconds


# -- parse_mem -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, mib",
    [
        ("4GB", 4096),
        ("4G", 4096),
        ("4gb", 4096),
        ("4 GB", 4096),
        ("500M", 500),
        ("500MB", 500),
        ("500", 500),
        ("1.5G", 1536),
        ("2048K", 2),
        ("2048KB", 2),
        ("1K", 1),  # rounded up: never ask for less than given
        ("1T", 1024 * 1024),
        ("1P", 1024**3),
        ("4GiB", 4096),
        ("256MiB", 256),
        ("1024KiB", 1),
        (" 8G ", 8192),
        (1, 1),
        (4096, 4096),
    ],
)
def test_parse_mem_accepted_formats(value, mib):
    result = parse_mem(value)
    assert result == mib
    assert type(result) is int


@pytest.mark.parametrize(
    "value",
    [
        "",
        "abc",
        "G",
        "4X",
        "4GG",
        "-5G",
        "4 G B",
        "1.5.2G",
        "0",
        "0G",
        "0.0M",
        0,
        -1,
        True,
        False,
        1.5,
        None,
        [4],
    ],
)
def test_parse_mem_refuses_bad_values(value):
    with pytest.raises(ValueError):
        parse_mem(value)


# -- Resources.create ------------------------------------------------------------------


def test_create_parses_every_key():
    res = Resources.create(
        name="my job",
        queue="short",
        time="1:00:00",
        nodes=1,
        ppn="2",
        threads=4,
        mem="2G",
        gpus=0,
        account="proj-1",
        stdout="/tmp/out.txt",
        stderr="err.txt",
        env={"B": 2, "A": "x y"},
        workdir="/scratch/w",
        native="--exclusive",
    )
    assert res.name == "my job"
    assert res.queue == "short"
    assert res.time == 3600
    assert res.nodes == 1
    assert res.ppn == 2
    assert res.threads == 4
    assert res.mem == 2048
    assert res.gpus == 0
    assert res.account == "proj-1"
    assert res.stdout == "/tmp/out.txt"
    assert res.stderr == "err.txt"
    assert res.env == (("A", "x y"), ("B", "2"))  # sorted, values as text
    assert res.env_dict == {"A": "x y", "B": "2"}
    assert res.workdir == "/scratch/w"
    assert res.native == ("--exclusive",)


def test_create_with_nothing_is_empty():
    res = Resources.create()
    assert res == Resources()
    assert res.to_dict() == {}


BAD_VALUES = [
    ("name", ""),
    ("name", "two\nlines"),
    ("name", "tab\there"),
    ("name", 5),
    ("queue", "has space"),
    ("queue", "semi;colon"),
    ("queue", "$(x)"),
    ("queue", ""),
    ("time", "abc"),
    ("soft_time", "abc"),
    ("soft_time", 0),
    ("time", 0),
    ("time", True),
    ("time", 1.5),
    ("nodes", 0),
    ("nodes", -1),
    ("nodes", "two"),
    ("nodes", 1.0),
    ("nodes", True),
    ("ppn", 0),
    ("ppn", "-2"),
    ("threads", 0),
    ("threads", 2.5),
    ("threads", False),
    ("mpi", "pmi x"),
    ("mem", "lots"),
    ("mem", 0),
    ("mem", "-1G"),
    ("gpus", -1),
    ("gpus", "one"),
    ("gpus_per_task", -1),
    ("gpus_per_task", 1.5),
    ("account", "a b"),
    ("account", "a'b"),
    ("stdout", ""),
    ("stdout", "a\nb"),
    ("stderr", 3),
    ("env", "A=1"),
    ("env", ["A"]),
    ("env", {"1BAD": "x"}),
    ("env", {"A-B": "x"}),
    ("env", {"": "x"}),
    ("env", {"A": None}),
    ("env", {"A": True}),
    ("env", {"A": ["x"]}),
    ("env", {"A": "nul\0byte"}),
    ("workdir", ""),
    ("workdir", "a\rb"),
    ("native", 5),
    ("native", ["ok", ""]),
    ("native", ["a\nb"]),
    ("native", {"x": 1}),
    ("mail", ""),
    ("mail", "not an address"),
    ("mail", "me@x.org:sometimes"),
    ("mail", "me@x.org:"),
    ("mail", {"to": "me@x.org", "on": []}),
    ("mail", {"to": "me@x.org", "when": ["end"]}),
    ("mail", {"on": ["end"]}),
    ("mail", ["me@x.org"]),
    ("begin", "tomorrow"),
    ("begin", "2030-13-01"),
    ("begin", 1700000000),
    ("begin", timedelta(seconds=-5)),
    ("deadline", "soon"),
    ("deadline", "+later"),
    ("stdin", ""),
    ("stdin", "a\nb"),
    ("join_output", "maybe"),
    ("join_output", 1),
]


@pytest.mark.parametrize("key, value", BAD_VALUES)
def test_create_refuses_bad_value_naming_the_key(key, value):
    with pytest.raises(ResourceError) as info:
        Resources.create(**{key: value})
    message = str(info.value)
    assert repr(key) in message
    assert "bad value" in message


def test_resource_error_is_a_value_error_and_an_hpcexec_error():
    with pytest.raises(ValueError):
        Resources.create(nodes=0)
    with pytest.raises(HpcexecError):
        Resources.create(nodes=0)


def test_every_table_key_is_a_field_and_has_a_bad_value_test():
    assert set(RESOURCE_TABLE) == {k for k, _ in BAD_VALUES}
    assert set(RESOURCE_TABLE) <= set(Resources.__dataclass_fields__)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ResourceError) as info:
        Resources.create(walltime_xyz="1:00:00")
    message = str(info.value)
    assert "'walltime_xyz'" in message
    assert "Valid ones:" in message
    for key in RESOURCE_TABLE:
        assert key in message


@pytest.mark.parametrize(
    "typo, meant", [("mem_gb", "mem"), ("thread", "threads"), ("queu", "queue"), ("gpu", "gpus")]
)
def test_unknown_key_suggests_the_closest(typo, meant):
    with pytest.raises(ResourceError, match=rf"Did you mean '{meant}'\?"):
        Resources.create(**{typo: 1})


def test_unknown_key_without_a_close_match_has_no_hint():
    with pytest.raises(ResourceError) as info:
        Resources.create(zzzzzzzz=1)
    assert "Did you mean" not in str(info.value)


# -- replace ---------------------------------------------------------------------------


def test_replace_returns_a_new_checked_copy():
    base = Resources.create(time=10, threads=2, env={"A": "1"})
    changed = base.replace(threads="8", mem="1G")
    assert changed.threads == 8
    assert changed.mem == 1024
    assert changed.time == 600  # kept
    assert changed.env == (("A", "1"),)
    assert base.threads == 2 and base.mem is None  # the original is unchanged (frozen)


def test_replace_none_clears():
    base = Resources.create(time=10, threads=2, env={"A": "1"}, native=["--x"], queue="q")
    cleared = base.replace(time=None, threads=None, env=None, native=None, queue=None)
    assert cleared.time is None
    assert cleared.threads is None
    assert cleared.queue is None
    assert cleared.env == ()
    assert cleared.native == ()
    assert cleared == Resources()


def test_replace_checks_values_and_keys():
    base = Resources.create(threads=2)
    with pytest.raises(ResourceError, match="'threads'"):
        base.replace(threads=0)
    with pytest.raises(ResourceError, match="Did you mean 'threads'"):
        base.replace(thread=1)


def test_replace_env_replaces_the_whole_mapping():
    base = Resources.create(env={"A": "1", "B": "2"})
    assert base.replace(env={"C": "3"}).env == (("C", "3"),)


def test_resources_are_frozen():
    res = Resources.create(threads=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.threads = 3  # type: ignore[misc]


# -- cores, canonical, placeholders ----------------------------------------------------


@pytest.mark.parametrize(
    "values, cores",
    [
        ({}, 1),
        ({"threads": 4}, 4),
        ({"ppn": 3}, 3),
        ({"threads": 4, "ppn": 3}, 12),
        ({"nodes": 5}, 1),
        ({"nodes": 2, "threads": 2}, 2),
    ],
)
def test_cores(values, cores):
    assert Resources.create(**values).cores == cores


def test_canonical_is_stable_json_without_name_or_scheduling():
    a = Resources.create(name="first", time="1:00:00", env={"B": "2", "A": "1"}, threads=2)
    b = Resources.create(threads=2, env={"A": "1", "B": "2"}, time=60, name="second")
    c = Resources.create(threads=2, env={"A": "1", "B": "2"}, mem="8G", queue="long")
    assert a.canonical() == b.canonical() == c.canonical()
    assert a.canonical() == ('{"env":{"A":"1","B":"2"},"threads":2}')
    assert json.loads(a.canonical()) == {"env": {"A": "1", "B": "2"}, "threads": 2}


def test_canonical_differs_when_what_is_computed_differs():
    base = Resources.create(threads=2)
    assert base.canonical() != base.replace(threads=3).canonical()
    assert base.canonical() != base.replace(env={"A": "1"}).canonical()
    assert base.canonical() != base.replace(ppn=2).canonical()
    assert base.canonical() != base.replace(workdir="/tmp").canonical()
    assert Resources().canonical() == "{}"


@pytest.mark.parametrize(
    "key, value",
    [
        ("time", "2:00:00"),
        ("mem", "64G"),
        ("queue", "long"),
        ("account", "proj42"),
        ("gpus", 2),
        ("native", ["--constraint=skylake"]),
    ],
)
def test_scheduling_resources_are_not_in_the_key_unless_filled_in(key, value):
    base = Resources.create(threads=2)
    other = base.replace(**{key: value})
    assert base.canonical() == other.canonical()
    assert base.canonical([key]) != other.canonical([key])  # a {placeholder} of the text


def test_to_dict_only_set_fields():
    res = Resources.create(name="n", env={"A": "1"}, native=["--a", "--b"], mem=10)
    assert res.to_dict() == {"name": "n", "env": {"A": "1"}, "native": ["--a", "--b"], "mem": 10}


def test_placeholders_defaults():
    assert Resources().placeholders() == {
        "threads": "1",
        "ppn": "1",
        "nodes": "1",
        "cores": "1",
        "ntasks": "1",
    }


def test_placeholders_values():
    res = Resources.create(
        name="job",
        time="1-00:00:30",
        threads=4,
        ppn=2,
        mem="1.5G",
        queue="q",
        env={"A": "1"},
        native=["--x"],
        workdir="/w",
    )
    ph = res.placeholders()
    assert ph == {
        "name": "job",
        "time": "24:00:30",
        "threads": "4",
        "ppn": "2",
        "nodes": "1",
        "mem": "1536",
        "queue": "q",
        "workdir": "/w",
        "cores": "8",
        "ntasks": "2",
    }
    assert all(isinstance(v, str) for v in ph.values())


# -- split_options ---------------------------------------------------------------------


def test_split_options_separates_resources_and_job_options():
    res, opts = split_options(
        {
            "threads": 2,
            "key": "k",
            "force": True,
            "mem": "1G",
            "retry": 2,
            "hold": False,
            "after": ["x"],
        }
    )
    assert res == {"threads": 2, "mem": "1G"}
    assert opts == {"key": "k", "force": True, "retry": 2, "hold": False, "after": ["x"]}
    assert set(JOB_OPTIONS) == {
        "key",
        "force",
        "retry",
        "hold",
        "after",
        "array_limit",
        "reuse_slots",
        "prologue",
        "epilogue",
        "aux_scripts",
        "retries",
        "retry_exit_codes",
        "requeue",
        "checkpoint_grace",
        "vars",
    }


def test_split_options_empty():
    assert split_options({}) == ({}, {})


def test_split_options_refuses_unknown_names():
    with pytest.raises(ResourceError) as info:
        split_options({"threads": 2, "forse": True})
    message = str(info.value)
    assert "'forse'" in message
    assert "Did you mean 'force'?" in message
    assert "resource or job option" in message
    for name in list(RESOURCE_TABLE) + list(JOB_OPTIONS):
        assert name in message


@pytest.mark.parametrize(
    "alias, value, name, parsed",
    [
        ("cpus", 4, "threads", 4),
        ("cpus_per_task", 2, "threads", 2),
        ("mem_gb", 4, "mem", 4096),
        ("timeout_min", 90, "time", 5400),
        ("walltime", "1:30:00", "time", 5400),
    ],
)
def test_other_tools_names_are_taken_with_a_warning(alias, value, name, parsed):
    with pytest.warns(UserWarning, match=rf"{alias}={value!r} is taken as {name}=.*'{name}'"):
        res, _ = split_options({alias: value, "force": True})
    assert getattr(Resources.create(**res), name) == parsed


def test_an_alias_and_its_name_together_are_refused():
    with pytest.raises(ResourceError, match="'cpus' and 'threads' name the same resource"):
        split_options({"cpus": 2, "threads": 4})


@pytest.mark.parametrize("typo", ["cpu", "ncpus"])
def test_a_cpu_count_by_another_name_suggests_threads(typo):
    with pytest.raises(ResourceError, match="Did you mean 'threads'"):
        split_options({typo: 4})


@pytest.mark.parametrize("value", ["512B", "512b", "4ib"])
def test_parse_mem_refuses_a_bare_byte_suffix(value):
    with pytest.raises(ValueError):
        parse_mem(value)


def test_soft_time_is_a_soft_limit_below_time_and_refused_where_no_scheduler_has_one():
    res = Resources.create(time="1:00:00", soft_time="50:00")
    assert res.soft_time == 3000 and res.placeholders()["soft_time"] == "00:50:00"
    assert "soft_time" not in json.loads(res.canonical())  # scheduling only: not in the key
    for soft in ("1:00:00", "2:00:00"):
        with pytest.raises(ResourceError, match=r"soft_time .* is not below time"):
            Resources.create(time="1:00:00", soft_time=soft)
    for name in ("slurm", "pbspro", "torque"):
        with pytest.raises(BackendError, match=r"no soft wallclock limit.*backend=.sge."):
            SCHEDULERS[name]().check(res)
    for name in ("sge", "lsf"):
        SCHEDULERS[name]().check(res)
