"""Rendering a scheduler submission: one job's submit spec, an array's (with the files of its
new directory), and the script handed over."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from .backends.base import SchedulerBackend, SubmitSpec
from .layout import SCRIPT, SUBMIT_SCRIPT, JobLayout
from .record import TASK_INDEX, JobRecord
from .resources import Resources
from .slots import CLAIMS, SHARE

FILE_DIRECTIVES = "file_directives"  # record resources: directives of a submitted job file
JOBDIRS = "jobdirs"  # beside an array's script: its records' job directories, one a line


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


@dataclass
class ArrayFiles:
    """What an array's submission writes in its new directory (Transport.stage, at once)."""

    dirs: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # link -> target


def array_submission(
    backend: SchedulerBackend,
    base: str,
    recs: list[JobRecord],
    res: Resources,
    name: str,
    workdir: str,
    *,
    after: tuple[str, ...],
    hold: bool,
) -> tuple[SubmitSpec, str, str | None, ArrayFiles]:
    """An array of ``recs`` in the new directory ``base``: its submission, the body under its
    directives, ``base`` if its elements share records (else None), and the files to write
    there (the script itself excepted)."""
    files = ArrayFiles(dirs=[base])
    for i, r in enumerate(recs, backend.array_index_base):
        lay = JobLayout.of(r.jobdir, r.resources)  # each element's output: its own job dir
        files.links[os.path.join(base, f"{i}.out")] = lay.stdout
        files.links[os.path.join(base, f"{i}.err")] = lay.stderr
    files.files[os.path.join(base, JOBDIRS)] = "".join(r.jobdir + "\n" for r in recs).encode()
    shared = shareable(recs, after, hold)
    if shared:
        files.dirs.append(os.path.join(base, CLAIMS))
        files.files[os.path.join(base, SHARE)] = _share(backend, recs, res, name)
    pattern = backend.array_index_pattern
    spec = SubmitSpec(
        os.path.join(base, SUBMIT_SCRIPT),
        res,
        name,
        os.path.join(base, f"{pattern}.out"),
        os.path.join(base, f"{pattern}.err"),
        workdir,
        array_size=len(recs),
        hold=hold,
        after=after,
        array_limit=recs[0].resources.get("array_limit"),
        warning=recs[0].resources.get("checkpoint_grace"),
    )
    qbase = shlex.quote(base)
    body = f"mapfile -t _hx_dirs < {qbase}/{JOBDIRS}\n_hx_i={backend.array_index_expr}\n"
    if shared:  # run only a record no other element has taken; then maybe more
        body += (
            f'( set -o noclobber; : > {qbase}/{CLAIMS}/"$_hx_i" ) 2>/dev/null '
            f"|| exit 0\nexport HPCEXEC_SHARE={qbase}\n"
        )
    body += f'exec /bin/bash "${{_hx_dirs[$_hx_i]}}/{SCRIPT}"'
    return spec, body, base if shared else None, files


def shareable(recs: list[JobRecord], after: Sequence[str], hold: bool) -> bool:
    """Whether the elements of an array may run each other's records: Python jobs with one
    interpreter, not held (a released element must not run held ones), no dependencies (the
    job script's dependency check would be skipped), no ``stdin`` (tasks forked in one
    element would share the file's read position)."""
    return (
        not hold
        and not after
        and not recs[0].resources.get("stdin")
        and all(r.kind in ("call", "chunk") for r in recs)
        and len({r.resources.get("python") for r in recs}) == 1
        and recs[0].resources.get("reuse_slots", True) is not False
    )


def _share(backend: SchedulerBackend, recs: list[JobRecord], res: Resources, name: str) -> bytes:
    """The spec of slot reuse that every element of a shared array reads (see slots.py)."""
    layouts = [JobLayout.of(r.jobdir, r.resources) for r in recs]
    return json.dumps(
        {
            "jobdirs": [r.jobdir for r in recs],
            "names": [r.name or name for r in recs],
            "indices": [r.resources.get(TASK_INDEX) for r in recs],  # places in their maps
            "outputs": [[lay.stdout, lay.stderr_target] for lay in layouts],
            "time_limit": res.time,
            "index_base": backend.array_index_base,
        }
    ).encode()
