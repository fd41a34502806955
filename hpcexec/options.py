"""Job options: what, besides its resources, says how a job is looked up, submitted and run.

They are the fields of one frozen :class:`JobOptions`, listed here once with their defaults
and the checks of their values; every other list of option names (the keyword arguments the
executor takes besides resources, :data:`hpcexec.resources.JOB_OPTIONS`) is :data:`NAMES`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ResourceError
from .future import JobFuture
from .layout import RESERVED

#: what a job's cache key (``key=`` and every record's) may be
KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_AUX_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}$")
_FLAGS = ("force", "retry", "hold", "reuse_slots")


@dataclass(frozen=True)
class JobOptions:
    """The job options of an executor view (see :meth:`hpcexec.Executor.options`), checked
    when made: a bad value is a :class:`~hpcexec.errors.ResourceError` saying what to give.

    ``after`` may be given as one future or an iterable of them and is kept as a tuple;
    ``aux_scripts`` is kept sorted by name (an empty mapping as None)."""

    key: str | None = None  # the job's cache key instead of one made from its work
    force: bool = False  # run even if the cache has the result
    retry: bool = True  # run a cached failure again
    hold: bool = False  # submit held; future.release() lets it run
    after: tuple[JobFuture, ...] = ()  # jobs that must complete first
    array_limit: int | None = None  # most elements of an array job running at once
    reuse_slots: bool = True  # an array element (a local job: a lane) may run others queued
    prologue: str | None = None  # shell text run here before the job is submitted
    epilogue: str | None = None  # shell text run here once after the job ended
    aux_scripts: dict[str, str] | None = None  # {"name.sh": text} beside the job script
    retries: int = 0  # runs again of a job that ended for a cause outside its code
    retry_exit_codes: tuple[int, ...] = ()  # exit codes of the job's own that count as such
    requeue: int = 0  # runs again of a Checkpointable or shell job checkpointed at its warning
    checkpoint_grace: int | None = None  # seconds of warning before the walltime (default 90)
    vars: dict[str, str | None] | None = None  # values of the user's own {placeholders}

    def __post_init__(self) -> None:
        _check_hooks(self.prologue, self.epilogue)
        object.__setattr__(self, "aux_scripts", _aux_scripts(self.aux_scripts))
        for flag in _FLAGS:
            value = getattr(self, flag)
            if not isinstance(value, bool):
                raise ResourceError(f"job option {flag!r} takes True or False, not {value!r}")
        if self.key is not None and (not isinstance(self.key, str) or not KEY_RE.match(self.key)):
            raise ResourceError(
                f"job option 'key' must be 1-128 letters, digits, '.', '_' or '-' starting with "
                f"a letter or digit, not {self.key!r}"
            )
        limit = self.array_limit
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise ResourceError(
                f"job option 'array_limit' (most array elements running at "
                f"once) takes a whole number >= 1, not {limit!r}"
            )
        object.__setattr__(self, "after", _after(self.after))
        _check_retries("retries", self.retries)
        _check_retries("requeue", self.requeue)
        grace = self.checkpoint_grace
        if grace is not None and (
            isinstance(grace, bool) or not isinstance(grace, int) or not 1 <= grace <= 86400
        ):
            raise ResourceError(
                "job option 'checkpoint_grace' (seconds between the warning signal and the "
                f"walltime, for a Checkpointable job) takes a whole number 1-86400, not {grace!r}"
            )
        object.__setattr__(self, "retry_exit_codes", _exit_codes(self.retry_exit_codes))
        object.__setattr__(self, "vars", _user_values(self.vars))

    def replace(self, **changes: Any) -> JobOptions:
        """These options with ``changes`` (option names) in place of their values, checked.
        A change replaces the value: ``after`` given here is the whole list of futures."""
        return dataclasses.replace(self, **changes)

    def after_also(self, futures: list[JobFuture]) -> JobOptions:
        """These options with ``futures`` waited for too (those a job's arguments hold)."""
        return self.replace(after=(*self.after, *futures)) if futures else self


#: the job option names, in order: the fields of :class:`JobOptions`
NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(JobOptions))


def _after(after: Any) -> tuple[JobFuture, ...]:
    out = (after,) if isinstance(after, JobFuture) else tuple(after or ())
    for f in out:
        if not isinstance(f, JobFuture):
            raise ResourceError(f"job option 'after' takes JobFutures, not {type(f).__name__}")
    return out


def _check_hooks(*texts: Any) -> None:
    for hook, text in zip(("prologue", "epilogue"), texts, strict=True):
        if text is not None and (not isinstance(text, str) or not text.strip() or "\0" in text):
            raise ResourceError(
                f"job option {hook!r} takes shell text (a non-empty string "
                f"without NUL bytes), not {text!r}"
            )


def _aux_scripts(aux: Any) -> dict[str, str] | None:
    """``aux_scripts`` checked, as a dict sorted by name (None for none)."""
    if aux is None:
        return None
    if not isinstance(aux, Mapping):
        raise ResourceError(
            f"job option 'aux_scripts' takes a mapping of file names to "
            f"script text, e.g. {{'fetch.sh': 'rsync ...'}}, not {aux!r}"
        )
    for name, text in aux.items():
        if not isinstance(name, str) or not _AUX_NAME_RE.match(name) or name in RESERVED:
            raise ResourceError(
                f"auxiliary script name {name!r} must be a plain file name (letters, digits, "
                f"'_', '.', '+', '-'; no directories) other than hpcexec's own "
                f"({', '.join(sorted(RESERVED))})"
            )
        if not isinstance(text, str) or "\0" in text:
            raise ResourceError(f"auxiliary script {name!r} must be text without NUL bytes")
    return dict(sorted(aux.items())) or None


_RUNS_AGAIN = {
    "retries": "runs again of a job that ended for a cause outside its code: a node failure, "
    "a preemption, a kill",
    "requeue": "runs again of a Checkpointable or shell job checkpointed ahead of its walltime "
    "or preemption",
}


def _check_retries(name: str, n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 100:
        raise ResourceError(
            f"job option {name!r} ({_RUNS_AGAIN[name]}) takes a whole number 0-100, not {n!r}"
        )


def _exit_codes(codes: Any) -> tuple[int, ...]:
    values = (codes,) if isinstance(codes, int) else codes
    try:
        out: tuple[Any, ...] = tuple(sorted(set(values)))
    except TypeError:  # not an iterable of numbers
        out = (None,)
    if any(isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= 255 for c in out):
        raise ResourceError(
            "job option 'retry_exit_codes' takes exit codes 1-255 of the job's own code that "
            f'mean "run me again" (an int or a list of them), not {codes!r}'
        )
    return out


_VAR_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")  # as a {placeholder} is written
#: placeholders hpcexec fills itself besides the resources
BUILT_IN_PLACEHOLDERS = ("name", "jobdir", "cores", "ntasks")


def _user_values(values: Any) -> dict[str, str | None] | None:
    """``vars`` checked, as a dict of strings sorted by name (None for none): each name an
    identifier that is not hpcexec's own, each value a string or number (None: declared, unset,
    so that a text using it is refused)."""
    if values is None:
        return None
    if not isinstance(values, Mapping):
        raise ResourceError(
            f"job option 'vars' takes a mapping of placeholder names to values, e.g. "
            f"{{'infile': 'data.csv'}}, not {values!r}"
        )
    out: dict[str, str | None] = {}
    for name, value in sorted(values.items()):
        if not isinstance(name, str) or not _VAR_NAME_RE.match(name):
            raise ResourceError(
                f"vars name {name!r} must be lowercase letters, digits and '_', not starting "
                "with a digit, as in {infile}"
            )
        if name in BUILT_IN_PLACEHOLDERS:  # a resource's name: refused by split_options
            raise ResourceError(
                f"vars name {name!r} is hpcexec's own placeholder: give the resource "
                f"{name}=... instead, or choose another name"
            )
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (str, int, float))
        ):
            raise ResourceError(
                f"vars value of {name!r} must be a string or a number, not {value!r}"
            )
        out[name] = None if value is None else str(value)
    return out or None
