"""Rendering a scheduler submission: one job's submit spec and the script handed over."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from .backends.base import SchedulerBackend, SubmitSpec
from .layout import SUBMIT_SCRIPT, JobLayout
from .resources import Resources

FILE_DIRECTIVES = "file_directives"  # record resources: directives of a submitted job file


def single_spec(
    res: Resources,
    name: str,
    jobdir: str,
    workdir: str,
    *,
    hold: bool = False,
    after: tuple[str, ...] = (),
    warning: int | None = None,
) -> SubmitSpec:
    """The submission of one job on its own (not an array)."""
    lay = JobLayout(jobdir, workdir, res.stdout, res.stderr, bool(res.join_output))
    return SubmitSpec(
        lay.file(SUBMIT_SCRIPT),
        res,
        name,
        lay.stdout,
        lay.stderr,
        workdir,
        hold=hold,
        after=after,
        warning=warning,
    )


def job_body(job_script: str) -> str:
    """A job script without its first line (the shebang), to follow submission directives."""
    return job_script.split("\n", 1)[1].rstrip("\n") if "\n" in job_script else ""


def single_body(backend: SchedulerBackend, job_script: str, path: str) -> str:
    """What follows the directives when a job is submitted on its own: its script, or, when
    the scheduler reads directives anywhere in the file (Grid Engine) and a line of the script
    looks like one, a line that runs the script from ``path``, so that a shell body's line such
    as ``#$ -l h_rt=1`` (or a here-document holding one) is never taken as a directive."""
    body = job_body(job_script)
    prefix = backend.directives_anywhere
    if prefix and any(line.lstrip().startswith(prefix) for line in body.splitlines()):
        return f"exec /bin/bash {shlex.quote(path)}"
    return body


def submission_script(file_directives: Sequence[str], directives: Sequence[str], body: str) -> str:
    """What is given to the scheduler: a shebang, the directives of a submitted job file
    (``Executor.submit_file``), then hpcexec's, which come later and so win where both set
    one option (SLURM and Grid Engine take the last), then the body."""
    return "\n".join(["#!/bin/bash", *file_directives, *directives, body]) + "\n"
