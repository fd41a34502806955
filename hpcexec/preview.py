"""A job's script text (``job.sh``), and the preview of what submitting a job would give
the scheduler (:meth:`Executor.job_script`), rendered as the submission does it."""

from __future__ import annotations

import shlex

from .future import JobFuture
from .jobspec import Job
from .layout import JobLayout
from .script import TaskLaunch, render
from .session import Session
from .states import JobState


def job_layout(session: Session, j: Job) -> JobLayout:
    """Where a job about to be submitted will have its files."""
    return JobLayout.of(session.job_dir(j.key), {**j.res.to_dict(), **session.placed(j.res)})


def job_script(session: Session, j: Job, after: list[str]) -> str:
    """The text of a job's script (``job.sh`` in its directory); ``after``: the job
    directories of the jobs it depends on."""
    lay = job_layout(session, j)
    jobdir, workdir = lay.jobdir, lay.workdir
    parts = session.backend.script_parts(
        j.res, name=j.name, jobdir=jobdir, workdir=workdir, stdout=lay.stdout, stderr=lay.stderr
    )
    if j.kind == "shell":
        assert j.body is not None
        return render(
            parts,
            j.res,
            jobdir=jobdir,
            workdir=workdir,
            submit_host=session.host,
            name=j.name,
            shell_body=j.body,
            after=after,
            restartable=j.requeue > 0,
            user_values=j.values,
            index=j.index,
            index_step=j.index_step,
        )
    command = (
        f"{shlex.quote(session.python)} -m hpcexec.runner {shlex.quote(jobdir)} "
        f"{shlex.quote(session.key_file)}"
    )
    return render(
        parts,
        j.res,
        jobdir=jobdir,
        workdir=workdir,
        submit_host=session.host,
        name=j.name,
        command=command,
        after=after,
        tasks=task_launch(session, j),
        warned=j.requeue > 0,
        index=j.index,
        index_step=j.index_step,
    )


def task_launch(session: Session, j: Job) -> TaskLaunch | None:
    """How a callable's job runs it once per task (None: a job of one task runs it once)."""
    res = j.res
    if res.ntasks <= 1:
        return None
    return TaskLaunch(
        tuple(session.backend.task_launcher(res, session.python)),
        session.python,
        res.ntasks,
        res.nodes or 1,
        res.ppn or 1,
    )


def preview(session: Session, j: Job, after: list[JobFuture], hold: bool) -> str:
    """What submitting ``j`` on its own would give the scheduler (the local backend:
    run), rendered as the submission does it; nothing is written."""
    script = job_script(session, j, sorted({f.jobdir for f in after}))
    ids = set()  # as if submitted now: dependencies not yet completed, by their ids
    for f in after:
        try:
            rec = f.record
        except KeyError:
            continue
        if rec.job_id and rec.state is not JobState.COMPLETED:
            ids.add(rec.job_id)
    res = j.res.replace(**{**session.placed(j.res), "workdir": None})
    return session.queue.preview(
        script,
        res,
        j.name,
        job_layout(session, j),
        hold=hold,
        after=tuple(sorted(ids)),
        file_directives=j.directives,
    )
