"""Submitting gathered records: grouped into arrays, each intent recorded first, and the
intents a crash left recovered."""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
import uuid
from collections import defaultdict
from collections.abc import Callable

from .backends.base import SchedulerBackend, SubmitSpec
from .driver import QUEUED
from .errors import BackendError, SchedulerOutputError, SubmitError, TransportError
from .layout import SCRIPT, SUBMIT_SCRIPT, JobLayout
from .record import JobRecord
from .recovery import Submitted, note_job_ids
from .resources import Resources, task_count
from .schedcommands import SchedulerCommands
from .schedscript import FILE_DIRECTIVES, single_body, single_spec, submission_script
from .slots import CLAIMS, SHARE
from .states import JobState
from .store import Store
from .transport.base import Transport

# The scheduler driver's logger, whichever of its modules writes: users filter on it.
log = logging.getLogger("hpcexec.schedqueue")

SUBMITTING = "submitting "  # reason prefix of a record whose submission may be under way


class Submitter:
    """Submits the unsubmitted records of one backend on one host: those that arrive within
    ``window`` seconds of each other (at most ``max_window``) go as one array per group of
    jobs with the same resources; ``dependencies`` is the driver's dependency rule."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        backend: SchedulerBackend,
        commands: SchedulerCommands,
        arrays_dir: str,
        dependencies: Callable[[JobRecord], list[JobRecord] | None],
        *,
        window: float,
        max_window: float,
    ) -> None:
        self.store = store
        self.transport = transport
        self.backend = backend
        self.commands = commands
        self.host = transport.host
        self.arrays_dir = arrays_dir
        self.dependencies = dependencies
        self.window = window
        self.max_window = max_window
        self.soon: float | None = None  # the monitor should look again this soon

    def submit_waiting(self) -> bool:
        """Submit what has gathered (or recover interrupted submissions); True if a record
        changed. Sets :attr:`soon` where more may be on the way."""
        self.soon = None
        waiting = self.store.jobs_in(self.backend.name, self.host, QUEUED, submitted=False)
        if not waiting:
            return False
        recovering = [r for r in waiting if (r.reason or "").startswith(SUBMITTING)]
        if recovering:
            self._recover(recovering)
            return True
        now = time.time()
        newest = max(r.submitted or now for r in waiting)
        oldest = min(r.submitted or now for r in waiting)
        if now - newest < self.window and now - oldest < self.max_window:
            # More may be on the way: gather them into one submission.
            self.soon = min(self.window - (now - newest), self.max_window - (now - oldest))
            return False
        groups: dict[tuple, list[JobRecord]] = defaultdict(list)
        changed = False
        for rec in waiting:
            after = self._dependency_ids(rec)
            if after is None:
                changed = True  # cancelled: a dependency failed
                continue
            if after == "wait":
                continue
            res = {
                k: v for k, v in rec.resources.items() if k not in ("name", "python", "array_dir")
            }
            # a multi-task job is its own submission, never an array element or a slot
            alone = rec.key if task_count(res) > 1 else ""
            key = (json.dumps(res, sort_keys=True), tuple(after), rec.state is JobState.HELD, alone)
            groups[key].append(rec)
        for (_, after, hold, _), recs in groups.items():
            size = self.commands.max_array()
            for i in range(0, len(recs), size):
                self._submit_group(recs[i : i + size], list(after), hold)
                changed = True
        return changed

    def _dependency_ids(self, rec: JobRecord) -> list[str] | str | None:
        """Scheduler ids this job must wait for; "wait" if one is not submitted yet; None if
        one failed (the job is then cancelled)."""
        waiting = self.dependencies(rec)
        if waiting is None:
            return None
        if any(not d.job_id for d in waiting):
            return "wait"
        return sorted(d.job_id for d in waiting if d.job_id)

    def _submit_group(self, recs: list[JobRecord], after: list[str], hold: bool) -> None:
        """Submit jobs of one kind together: one on its own, more as one array. The intent is
        recorded before the scheduler is called, the job ids after."""
        first = recs[0]
        res = Resources.from_dict({k: v for k, v in first.resources.items() if k != "workdir"})
        workdir = JobLayout.of(first.jobdir, first.resources).workdir
        names = {r.name for r in recs}
        name = (names.pop() if len(names) == 1 else None) or "hpcexec-batch"
        if len(recs) == 1:
            spec = single_spec(
                res,
                name,
                first.jobdir,
                workdir,
                hold=hold,
                after=tuple(after),
                warning=first.resources.get("checkpoint_grace"),
            )
            # The job script itself, under the directives: what Executor.job_script shows,
            # and what the scheduler's own views of the job (scontrol, qstat -j) show.
            path = JobLayout.of(first.jobdir, first.resources).script
            body = single_body(self.backend, self.transport.read_bytes(path).decode(), path)
            shared_dir = None
        else:
            spec, body, shared_dir = self._array(recs, res, name, workdir, after, hold)
        try:
            directives = self.backend.directives(spec)
        except (BackendError, ValueError) as e:  # cannot be expressed: fail, never retry
            self._fail(recs, f"{self.backend.name} cannot submit this job: {e}")
            return
        script = submission_script(first.resources.get(FILE_DIRECTIVES, ()), directives, body)
        self.transport.write_bytes(spec.script, script.encode())
        with self.store.write() as tx:  # the intent, so a crash here never submits twice
            for r in recs:
                resources = {k: v for k, v in r.resources.items() if k != "array_dir"}
                if shared_dir:
                    resources["array_dir"] = shared_dir
                tx.update(r.key, reason=SUBMITTING + spec.script, resources=resources)
        job_id = self._hand_over(recs, spec, script)
        if job_id is not None:
            self._record_ids(recs, spec, job_id, shared_dir)

    def _array(
        self,
        recs: list[JobRecord],
        res: Resources,
        name: str,
        workdir: str,
        after: list[str],
        hold: bool,
    ) -> tuple[SubmitSpec, str, str | None]:
        """An array of ``recs``, its files written in a new directory: its submission, the
        body under its directives, and that directory if its elements share records."""
        base = os.path.join(self.arrays_dir, uuid.uuid4().hex[:16])
        self.transport.make_dir(base)
        pattern = self.backend.array_index_pattern
        for i, r in enumerate(recs, self.backend.array_index_base):
            lay = JobLayout.of(r.jobdir, r.resources)  # each element's output: its own job dir
            self.transport.symlink(lay.stdout, os.path.join(base, f"{i}.out"))
            self.transport.symlink(lay.stderr, os.path.join(base, f"{i}.err"))
        self.transport.write_bytes(
            os.path.join(base, "jobdirs"), "".join(r.jobdir + "\n" for r in recs).encode()
        )
        shared = self._shareable(recs, after, hold)
        if shared:
            self._write_share(base, recs, res, name)
        spec = SubmitSpec(
            os.path.join(base, SUBMIT_SCRIPT),
            res,
            name,
            os.path.join(base, f"{pattern}.out"),
            os.path.join(base, f"{pattern}.err"),
            workdir,
            array_size=len(recs),
            hold=hold,
            after=tuple(after),
            array_limit=recs[0].resources.get("array_limit"),
            warning=recs[0].resources.get("checkpoint_grace"),
        )
        qbase = shlex.quote(base)
        body = f"mapfile -t _hx_dirs < {qbase}/jobdirs\n_hx_i={self.backend.array_index_expr}\n"
        if shared:  # run only a record no other element has taken; then maybe more
            body += (
                f'( set -o noclobber; : > {qbase}/{CLAIMS}/"$_hx_i" ) 2>/dev/null '
                f"|| exit 0\nexport HPCEXEC_SHARE={qbase}\n"
            )
        body += f'exec /bin/bash "${{_hx_dirs[$_hx_i]}}/{SCRIPT}"'
        return spec, body, base if shared else None

    def _fail(self, recs: list[JobRecord], reason: str) -> None:
        with self.store.write() as tx:
            for r in recs:
                tx.update(r.key, state=JobState.FAILED, finished=time.time(), reason=reason)

    def _hand_over(self, recs: list[JobRecord], spec: SubmitSpec, script: str) -> str | None:
        """Run the submit command: the job id; None if the scheduler refused (the records
        then failed). A TransportError passes: whether it was submitted is unknown."""
        try:
            out = self.commands.run(
                self.backend.submit_argv(spec), input=script if self.backend.submit_stdin else None
            )
            if not out.ok:
                raise SubmitError(
                    f"{self.backend.name} refused the job: "
                    f"{(out.stderr or out.stdout).strip()[:500]}"
                )
            return self.backend.parse_submit(out.stdout)
        except SubmitError as e:
            log.error("%s", e)
            self._fail(recs, str(e))
            return None
        except TransportError:
            # Unknown whether it reached the scheduler: the intent stays, recovery decides.
            log.warning("submitting %s may have failed; checking before any retry", spec.script)
            raise

    def _record_ids(
        self, recs: list[JobRecord], spec: SubmitSpec, job_id: str, shared_dir: str | None
    ) -> None:
        """Keep the submitted jobs' ids: beside each job, then in the records."""
        ids = {
            r.jobdir: Submitted(job_id)
            if spec.array_size is None
            else Submitted(self.backend.element_id(job_id, i), i, shared_dir)
            for i, r in enumerate(recs)
        }
        note_job_ids(self.transport, ids)  # so a lost cache still knows they were submitted
        with self.store.write() as tx:
            for r in recs:
                tx.update(
                    r.key,
                    job_id=ids[r.jobdir].job_id,
                    reason=None,
                    array_index=ids[r.jobdir].array_index,
                )
        log.info("submitted %d job(s) to %s as %s", len(recs), self.backend.name, job_id)

    def _shareable(self, recs: list[JobRecord], after: list[str], hold: bool) -> bool:
        """Whether the elements of this array may run each other's records: Python jobs
        with one interpreter, not held (a released element must not run held ones), no
        dependencies (the job script's dependency check would be skipped), no ``stdin``
        (tasks forked in one element would share the file's read position)."""
        return (
            not hold
            and not after
            and not recs[0].resources.get("stdin")
            and all(r.kind in ("call", "chunk") for r in recs)
            and len({r.resources.get("python") for r in recs}) == 1
            and recs[0].resources.get("reuse_slots", True) is not False
        )

    def _write_share(self, base: str, recs: list[JobRecord], res: Resources, name: str) -> None:
        self.transport.make_dir(os.path.join(base, CLAIMS))
        layouts = [JobLayout.of(r.jobdir, r.resources) for r in recs]
        spec = {
            "jobdirs": [r.jobdir for r in recs],
            "names": [r.name or name for r in recs],
            "outputs": [[lay.stdout, lay.stderr_target] for lay in layouts],
            "time_limit": res.time,
            "index_base": self.backend.array_index_base,
        }
        self.transport.write_bytes(os.path.join(base, SHARE), json.dumps(spec).encode())

    def _recover(self, recs: list[JobRecord]) -> None:
        """Records whose submission may have reached the scheduler before a crash: adopt the
        job if the queue has its script or its script started (the started file holds its
        id), else submit it again."""
        queued: dict[str, str] = {}
        argv = self.backend.find_argv()
        if argv:
            out = self.commands.run(argv, query=True)
            if not out.ok:  # the command ran: the scheduler's answer, not the connection
                raise SchedulerOutputError(
                    f"cannot list queued jobs to recover submissions: "
                    f"{(out.stderr or out.stdout).strip()[:300]}"
                )
            queued = self.backend.parse_find(out.stdout)
        adopted: dict[str, Submitted] = {}
        with self.store.write() as tx:
            for r in recs:
                script = (r.reason or "")[len(SUBMITTING) :]
                started = JobLayout.of(r.jobdir, r.resources).started
                if script in queued:
                    job_id = queued[script]
                    jobdirs = os.path.join(os.path.dirname(script), "jobdirs")
                    index = None
                    if self.transport.exists(jobdirs):
                        lines = self.transport.read_bytes(jobdirs).decode().splitlines()
                        index = lines.index(r.jobdir) if r.jobdir in lines else None
                    if index is not None:
                        job_id = self.backend.element_id(job_id, index)
                    log.warning(
                        "job %s was submitted before a crash as %s; adopting", r.key, job_id
                    )
                    tx.update(r.key, job_id=job_id, array_index=index, reason=None)
                    adopted[r.jobdir] = Submitted(job_id, index, r.resources.get("array_dir"))
                elif self.transport.exists(started):
                    job_id = self.transport.read_bytes(started).decode().split("\n")[0].strip()
                    log.warning(
                        "job %s was submitted before a crash as %s; adopting", r.key, job_id
                    )
                    tx.update(r.key, job_id=job_id or None, reason=None)
                else:
                    tx.update(r.key, reason=None, submitted=time.time() - self.max_window)
        note_job_ids(self.transport, adopted)
