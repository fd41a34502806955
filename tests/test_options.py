"""Job options: one frozen dataclass lists them (every other list of names is derived from
it), checks their values with the messages users see, and views merge them."""

from __future__ import annotations

import dataclasses

import jobfns
import pytest

import hpcexec
from hpcexec import JobOptions, ResourceError, resources
from hpcexec.layout import RESERVED
from hpcexec.options import NAMES

FIELDS = tuple(f.name for f in dataclasses.fields(JobOptions))


def test_the_option_names_are_listed_once_as_the_fields():
    assert NAMES == FIELDS
    assert resources.JOB_OPTIONS == FIELDS
    res, opts = resources.split_options({name: None for name in FIELDS} | {"threads": 2})
    assert (res, tuple(opts)) == ({"threads": 2}, FIELDS)
    assert hpcexec.JobOptions is JobOptions  # exported for type hints


def test_defaults():
    o = JobOptions()
    assert (o.key, o.force, o.retry, o.hold, o.after, o.array_limit, o.reuse_slots) == (
        None,
        False,
        True,
        False,
        (),
        None,
        True,
    )
    assert (o.prologue, o.epilogue, o.aux_scripts) == (None, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.hold = True  # type: ignore[misc]


def test_values_are_kept_in_one_form():
    o = JobOptions(after=None, aux_scripts={"b.sh": "2", "a.sh": "1"})
    assert o.after == ()
    assert list(o.aux_scripts) == ["a.sh", "b.sh"]  # sorted: the cache key does not see order
    assert JobOptions(aux_scripts={}).aux_scripts is None


BAD = [
    (dict(force="yes"), "job option 'force' takes True or False, not 'yes'"),
    (dict(retry=None), "job option 'retry' takes True or False, not None"),
    (dict(hold=1), "job option 'hold' takes True or False, not 1"),
    (dict(reuse_slots="no"), "job option 'reuse_slots' takes True or False, not 'no'"),
    (
        dict(key="bad key!"),
        "job option 'key' must be 1-128 letters, digits, '.', '_' or '-' starting with a "
        "letter or digit, not 'bad key!'",
    ),
    (
        dict(array_limit=0),
        "job option 'array_limit' (most array elements running at once) takes a whole number "
        ">= 1, not 0",
    ),
    (
        dict(array_limit=True),
        "job option 'array_limit' (most array elements running at once) takes a whole number "
        ">= 1, not True",
    ),
    (dict(after=[1]), "job option 'after' takes JobFutures, not int"),
    (dict(after="abc"), "job option 'after' takes JobFutures, not str"),
    (
        dict(prologue=" "),
        "job option 'prologue' takes shell text (a non-empty string without NUL bytes), not ' '",
    ),
    (
        dict(epilogue=5),
        "job option 'epilogue' takes shell text (a non-empty string without NUL bytes), not 5",
    ),
    (
        dict(aux_scripts="x"),
        "job option 'aux_scripts' takes a mapping of file names to script text, e.g. "
        "{'fetch.sh': 'rsync ...'}, not 'x'",
    ),
    (
        dict(aux_scripts={"a/b.sh": ""}),
        "auxiliary script name 'a/b.sh' must be a plain file name (letters, digits, '_', '.', "
        f"'+', '-'; no directories) other than hpcexec's own ({', '.join(sorted(RESERVED))})",
    ),
    (dict(aux_scripts={"a.sh": 1}), "auxiliary script 'a.sh' must be text without NUL bytes"),
]


@pytest.mark.parametrize(("values", "message"), BAD, ids=[str(v) for v, _ in BAD])
def test_bad_values_are_refused_with_what_to_give(values, message):
    with pytest.raises(ResourceError) as info:
        JobOptions(**values)
    assert str(info.value) == message
    with pytest.raises(ResourceError) as again:
        JobOptions().replace(**values)  # a view's change is checked the same way
    assert str(again.value) == message


def test_hook_options_are_checked_before_the_others():
    with pytest.raises(ResourceError, match="'prologue'"):
        JobOptions(prologue="", force="yes")


def test_bad_options_are_refused_by_the_executor_too(ex):
    for values, message in BAD:
        with pytest.raises(ResourceError) as info:
            ex.options(**values)
        assert str(info.value) == message
    with pytest.raises(ResourceError, match="'hold'"):
        hpcexec.Executor(cache_dir=ex.cache_dir, hold="yes")


def test_views_merge_their_options(ex):
    a = ex.options(hold=True).options(key="k1", threads=1)
    assert (a.job_options.hold, a.job_options.key) == (True, "k1")
    assert ex.job_options == JobOptions()  # a view leaves the executor's options alone
    assert a.options(hold=False).job_options.hold is False  # a later value wins
    first, second = ex.submit(jobfns.double, 1), ex.submit(jobfns.double, 2)
    assert ex.options(after=first).job_options.after == (first,)
    # after= given to a view replaces the list; futures in arguments add to it (below)
    assert ex.options(after=[first]).options(after=[second]).job_options.after == (second,)
    assert JobOptions(after=[first]).after_also([second]).after == (first, second)


def test_futures_in_arguments_add_to_the_views_after(ex):
    first, second = ex.submit(jobfns.double, 1), ex.submit(jobfns.double, 2)
    view = ex.options(after=[first])
    f = view.submit(jobfns.add, second, 1)
    assert f.result(timeout=60) == 5
    assert sorted(f.record.deps) == sorted([first.key, second.key])
    assert view.job_options.after == (first,)  # the view's own list is unchanged
