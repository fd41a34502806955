"""Every error class hpcexec raises is in the table of errors (docs/errors.md), with what to do."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from hpcexec import errors

ERRORS = Path(__file__).parent.parent / "docs" / "errors.md"


def test_every_error_class_has_a_row_in_the_docs():
    rows = dict(re.findall(r"^\| `(\w+)`[^|]*\|([^\n]+)$", ERRORS.read_text(), re.M))
    ours = {
        name
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.HpcexecError) and cls is not errors.HpcexecError
    }
    assert ours <= set(rows), f"not documented: {sorted(ours - set(rows))}"
    assert set(rows) <= ours, f"documented but gone: {sorted(set(rows) - ours)}"
    for name, rest in rows.items():
        raised_when, what_to_do = [c.strip() for c in rest.split("|")[:2]]
        assert raised_when and what_to_do, name


def test_errors_are_one_hierarchy():
    import hpcexec

    for name in (
        "ResourceError",
        "PayloadError",
        "BackendError",
        "SubmitError",
        "TransportError",
        "CacheError",
        "JobFailed",
    ):
        assert issubclass(getattr(hpcexec, name), hpcexec.HpcexecError), name
    assert issubclass(errors.OutOfMemory, errors.JobFailed)
    assert issubclass(errors.OutOfMemory, MemoryError)
