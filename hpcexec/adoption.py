"""Adopting a job started outside hpcexec (``sbatch`` by hand, another tool) by its
scheduler id: it gets a record like a submitted shell job's, so the status poll follows it
and ``hpcexec jobs``, ``show``, ``wait``, ``report`` and a future see it.

Its key is ``<backend>-<job id>`` (adopting it again finds the same record). Its state comes
from the scheduler's status, then its accounting; where the scheduler tells the job's name,
output files and working directory (SLURM's ``scontrol show job``), the record keeps them, so
its future's :class:`~hpcexec.future.ShellResult` holds the job's output. Its exit code is
the scheduler's: it writes no exit-code file of hpcexec's.
"""

from __future__ import annotations

import posixpath
import re
import time

from . import recovery
from .errors import BackendError, UnknownJob
from .layout import RECORD
from .record import JobRecord
from .schedqueue import SchedulerQueue
from .session import Session
from .states import JobState

_JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\[\]-]{0,99}$")


def adoption_key(backend: str, job_id: str) -> str:
    """The record key of an adopted job."""
    return f"{backend}-{re.sub(r'[^A-Za-z0-9_.-]', '_', job_id)}"


def adopt(session: Session, job_id: str, name: str | None = None) -> str:
    """Make (or find) the record of scheduler job ``job_id``; its key. Raises
    :class:`UnknownJob` if neither the queue nor accounting knows the job."""
    backend, queue = session.backend, session.queue
    if not isinstance(queue, SchedulerQueue):
        raise BackendError(
            "the local backend has no scheduler to adopt a job from: open an Executor of "
            "the job's scheduler (Executor('slurm').adopt(ID), hpcexec --backend slurm adopt ID)"
        )
    if not isinstance(job_id, str) or not _JOB_ID_RE.match(job_id):
        raise UnknownJob(f"{job_id!r} is not a {backend.name} job id")
    key = adoption_key(backend.name, job_id)
    if session.store.get(key) is not None:
        return key
    status, described = queue.look_up(job_id)
    if status is None:
        raise UnknownJob(
            f"{backend.name} knows no job {job_id} on {session.host} (neither its queue nor "
            f"its accounting): check the id (`hpcexec jobs` lists the jobs hpcexec has)"
        )
    jobdir = session.job_dir(key)
    paths: dict[str, object] = {
        k: described[k] for k in ("workdir", "stdout", "stderr") if k in described
    }
    rec = JobRecord(
        key=key,
        backend=backend.name,
        host=session.host,
        kind="shell",
        jobdir=jobdir,
        state=JobState.PENDING if not status.state.started else status.state,
        name=name or described.get("name") or f"job {job_id}",
        job_id=job_id,
        submitted=time.time(),
        started=time.time() if status.state.started else None,
        resources=paths,
        summary=f"adopted {backend.name} job {job_id}",
    )
    if status.state.finished:  # the status poll settles it from accounting
        rec.state = JobState.RUNNING
    session.transport.make_dir(jobdir)
    record_file = recovery.record_file(rec, session.key)
    session.transport.write_bytes(posixpath.join(jobdir, RECORD), record_file)
    with session.store.write() as tx:
        if tx.get(key) is None:  # adopted by someone else meanwhile: that record stands
            tx.put(rec)
    return key
