"""Recovering the submissions a crash or a dropped connection left unknown.

The submitter (:mod:`hpcexec.schedsubmit`) records each intent in its records (reason
:data:`SUBMITTING` and the submission script) before it calls the scheduler. Where the call's
fate is unknown (the command timed out, the connection dropped, the client stopped), the next
pass hands those records here: a job the queue lists with that script, or whose started file
names it, is adopted; any other record is submitted again. Nothing is ever submitted twice.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict

from .backends.base import SchedulerBackend
from .errors import SchedulerOutputError
from .layout import JobLayout
from .record import JobRecord
from .recovery import Submitted, note_job_ids
from .schedcommands import SchedulerCommands
from .schedscript import JOBDIRS
from .store import Store
from .transport.base import Transport

# The scheduler driver's logger, whichever of its modules writes: users filter on it.
log = logging.getLogger("hpcexec.schedqueue")

SUBMITTING = "submitting "  # reason prefix of a record whose submission may be under way


class Recovery:
    """Decides, for the records of one backend on one host whose submission may or may not
    have reached the scheduler, which were submitted (adopted) and which go again.
    :attr:`interrupted` holds why a submission's fate is unknown, by intent script, for the
    line that says what became of it."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        backend: SchedulerBackend,
        commands: SchedulerCommands,
    ) -> None:
        self.store = store
        self.transport = transport
        self.backend = backend
        self.commands = commands
        self.interrupted: dict[str, str] = {}  # intent script -> why its submission is unknown

    def recover(self, recs: list[JobRecord], again_at: float) -> None:
        """Adopt the job of each record if the queue has its script or its script started
        (the started file holds its id), else let it be submitted again, as if it had
        arrived at ``again_at``. One line each submission says which."""
        queued = self._queued()
        scripts = {r.key: (r.reason or "")[len(SUBMITTING) :] for r in recs}
        files = self._read(recs, scripts, queued)
        adopted: dict[str, Submitted] = {}
        found: dict[str, list[str]] = defaultdict(list)  # intent script -> adopted job ids
        again: dict[str, int] = defaultdict(int)  # intent script -> records submitted again
        with self.store.write() as tx:
            for r in recs:
                script = scripts[r.key]
                job_id, index = self._found(r, script, queued, files)
                if job_id is not None:
                    tx.update(r.key, job_id=job_id or None, array_index=index, reason=None)
                    if script in queued:
                        adopted[r.jobdir] = Submitted(job_id, index, r.resources.get("array_dir"))
                    found[script].append(job_id)
                else:
                    tx.update(r.key, reason=None, submitted=again_at)
                    again[script] += 1
        note_job_ids(self.transport, adopted)
        for script in {*found, *again}:
            why = self.interrupted.pop(script, "the client stopped while submitting it")
            ids = found.get(script, [])
            what = (
                f"{len(ids)} job(s) found in the queue as {_id_range(ids)}: adopted"
                if ids
                else f"not in the queue: its {again[script]} job(s) are submitted again"
            )
            log.warning("submitting %s did not finish (%s); %s", script, why, what)

    def _queued(self) -> dict[str, str]:
        """This user's queued jobs, by the script each runs (empty where the backend cannot
        list them); SchedulerOutputError where the scheduler's answer is not a list."""
        argv = self.backend.find_argv()
        if not argv:
            return {}
        out = self.commands.run(argv, query=True)
        if not out.ok:  # the command ran: the scheduler's answer, not the connection
            raise SchedulerOutputError(
                f"cannot list queued jobs to recover submissions: "
                f"{(out.stderr or out.stdout).strip()[:300]}"
            )
        return self.backend.parse_find(out.stdout)

    def _read(
        self, recs: list[JobRecord], scripts: dict[str, str], queued: dict[str, str]
    ) -> dict[str, bytes | None]:
        """What :meth:`_found` looks at, read together before the store is written: the
        job directories of each array found in the queue, the started file of each record
        not found there."""
        paths = {_jobdirs(s) for s in scripts.values() if s in queued} | {
            JobLayout.of(r.jobdir, r.resources).started
            for r in recs
            if scripts[r.key] not in queued
        }
        return self.transport.read_files(sorted(paths))

    def _found(
        self, rec: JobRecord, script: str, queued: dict[str, str], files: dict[str, bytes | None]
    ) -> tuple[str | None, int | None]:
        """The job id (and array index) of a record whose submission may have gone through:
        from the queue by its script, else from its started file; (None, None) if neither.
        ``files``: what :meth:`_read` read."""
        if script in queued:
            job_id = queued[script]
            listed = files[_jobdirs(script)]
            lines = listed.decode().splitlines() if listed is not None else []
            index = lines.index(rec.jobdir) if rec.jobdir in lines else None
            if index is not None:
                job_id = self.backend.element_id(job_id, index)
            return job_id, index
        started = files[JobLayout.of(rec.jobdir, rec.resources).started]
        if started is not None:
            return started.decode().split("\n")[0].strip(), None
        return None, None


def _jobdirs(script: str) -> str:
    """The list of job directories beside an array's script."""
    return os.path.join(os.path.dirname(script), JOBDIRS)


def _id_range(ids: list[str]) -> str:
    """A few job ids, the first and last of many."""
    return ", ".join(ids) if len(ids) <= 3 else f"{ids[0]} ... {ids[-1]}"
