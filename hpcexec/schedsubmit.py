"""Submitting gathered records: grouped into arrays, each intent recorded first (the intents
a crash left are recovered by :mod:`hpcexec.schedrecover`)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable

from .backends.base import SchedulerBackend, SubmitSpec
from .driver import QUEUED
from .errors import BackendError, SubmitError, TransportError
from .layout import JobLayout
from .record import INDEX_STEP, TASK_INDEX, JobRecord
from .recovery import Submitted, note_job_ids
from .resources import Resources, task_count
from .schedcommands import SchedulerCommands
from .schedrecover import SUBMITTING, Recovery
from .schedscript import (
    FILE_DIRECTIVES,
    array_submission,
    single_body,
    single_spec,
    submission_script,
)
from .schedstatus import ACTIVE
from .states import JobState
from .store import Store
from .submitroom import SubmitRoom
from .transport.base import Transport

# The scheduler driver's logger, whichever of its modules writes: users filter on it.
log = logging.getLogger("hpcexec.schedqueue")

# what became of one submission
SUBMITTED, FAILED, AT_LIMIT, TOO_LARGE, INTERRUPTED = "submitted", "failed", "limit", "large", "?"


#: queued jobs of this client below any site's limit on them: a client with no more waits
#: for no accounting query (``sacctmgr`` takes about half a second) before its first job
FEW_JOBS = 8

#: record resources that are each record's own: records differing only there share an array
PER_RECORD = ("name", "python", "array_dir", TASK_INDEX, INDEX_STEP)


class Submitter:
    """Submits the unsubmitted records of one backend on one host: those that arrive within
    ``window`` seconds of each other (at most ``max_window``) go as one array per group of
    jobs with the same resources; ``dependencies`` is the driver's dependency rule. At most
    ``max_queued`` of its jobs are in the scheduler's queue at once, and no more than the
    scheduler's limit on queued jobs allows (:class:`~hpcexec.submitroom.SubmitRoom`)."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        backend: SchedulerBackend,
        commands: SchedulerCommands,
        arrays_dir: str,
        dependencies: Callable[[JobRecord], list[JobRecord] | None],
        lingering: Callable[[], int],
        *,
        window: float,
        max_window: float,
        max_queued: int | None = None,
    ) -> None:
        self.store = store
        self.transport = transport
        self.backend = backend
        self.commands = commands
        self.host = transport.host
        self.arrays_dir = arrays_dir
        self.dependencies = dependencies
        self.lingering = lingering  # ended jobs the scheduler still lists (and counts)
        self.window = window
        self.max_window = max_window
        self.soon: float | None = None  # the monitor should look again this soon
        # a caller waits for a result (JobFuture.result): submit what gathers at once
        self.hurry = threading.Event()
        self.last_submitted: float | None = None  # when a job was last handed over
        self.room = SubmitRoom(max_queued)
        self._limit_read = False
        self._throttled: str | None = None  # why records wait, as last logged
        self.recovery = Recovery(store, transport, backend, commands)
        self._arrays_made = False  # arrays_dir made by this client (staged with its first array)

    def submit_waiting(self) -> bool:
        """Submit what has gathered (or recover interrupted submissions); True if a record
        changed. Sets :attr:`soon` where more may be on the way."""
        self.soon = None
        # Read the wish before the records: a result() asked for after the read would find
        # records the read missed, and those would go alone after the rest.
        hurry = self.hurry.is_set()
        if hurry:  # this pass takes it; a later one waits for the next
            self.hurry.clear()
        waiting = self.store.jobs_in(self.backend.name, self.host, QUEUED, submitted=False)
        if not waiting:
            return False
        recovering = [r for r in waiting if (r.reason or "").startswith(SUBMITTING)]
        if recovering:
            self.recovery.recover(recovering, again_at=time.time() - self.max_window)
            return True
        now = time.time()
        newest = max(r.submitted or now for r in waiting)
        oldest = min(r.submitted or now for r in waiting)
        if not hurry and now - newest < self.window and now - oldest < self.max_window:
            # More may be on the way: gather them into one submission.
            self.soon = min(self.window - (now - newest), self.max_window - (now - oldest))
            return False
        ready, changed = self._ready(waiting)
        if not self._limit_read and ready and self._queued() + len(ready) > FEW_JOBS:
            self._read_limit(ready)
        return self._submit_ready(ready, now) or changed

    def expect(self, count: int) -> None:
        """``count`` jobs are about to be written: where their submission will need the
        scheduler's limits (more than :data:`FEW_JOBS` queued), ask for them now, while the
        jobs' files are staged."""
        if not self._limit_read and self._queued() + count > FEW_JOBS:
            self.commands.ask_ahead()

    def _ready(self, waiting: list[JobRecord]) -> tuple[list[tuple[JobRecord, list[str]]], bool]:
        """The records whose dependencies are submitted, with those dependencies' ids; True if
        one was cancelled (a dependency failed)."""
        ready, changed = [], False
        for rec in waiting:
            after = self._dependency_ids(rec)
            if after is None:
                changed = True  # cancelled: a dependency failed
            elif after != "wait":
                ready.append((rec, list(after)))
        return ready, changed

    def _submit_ready(self, ready: list[tuple[JobRecord, list[str]]], now: float) -> bool:
        """Submit what there is room for, one array per group of jobs alike; the rest wait
        with the reason. True if a record changed."""
        queued = self._queued() if self.room.capped else 0
        done: set[str] = set()  # submitted or failed: not waiting
        refused: set[str] = set()  # refused at the limit just now: waiting, reason written
        changed = False
        for (_, after, hold, _), recs in self._groups(ready).items():
            size = self.commands.max_array()
            while recs:
                chunk = recs[:size]
                room = self.room.allowed(queued, now) if self.room.capped else None
                if room is not None and room < len(chunk):
                    chunk = chunk[:room]
                if not chunk:
                    break
                outcome = self._submit_group(chunk, list(after), hold, queued)
                changed = True
                if outcome == TOO_LARGE:
                    size = min(size, self.commands.max_array())
                    continue
                if outcome == INTERRUPTED:
                    return True  # the next pass recovers it, then submits the rest
                (refused if outcome == AT_LIMIT else done).update(r.key for r in chunk)
                if outcome == AT_LIMIT:
                    return self._hold_back(ready, done, refused, queued, now) or changed
                if outcome == SUBMITTED:
                    queued += len(chunk)
                recs = recs[len(chunk) :]
        return self._hold_back(ready, done, refused, queued, now) or changed

    def _groups(self, ready: list[tuple[JobRecord, list[str]]]) -> dict[tuple, list[JobRecord]]:
        """Records that go together: the same resources, dependencies and hold."""
        groups: dict[tuple, list[JobRecord]] = defaultdict(list)
        for rec, after in ready:
            res = {k: v for k, v in rec.resources.items() if k not in PER_RECORD}
            # a multi-task job is its own submission, never an array element or a slot
            alone = rec.key if task_count(res) > 1 else ""
            key = (json.dumps(res, sort_keys=True), tuple(after), rec.state is JobState.HELD, alone)
            groups[key].append(rec)
        return groups

    def _queued(self) -> int:
        """This client's jobs in the scheduler's queue (array elements one each)."""
        active = self.store.jobs_in(self.backend.name, self.host, ACTIVE, submitted=True)
        return len(active) + self.lingering()

    def _read_limit(self, ready: list[tuple[JobRecord, list[str]]]) -> None:
        """The scheduler's limit on queued jobs where its accounting tells it (asked once,
        before this client queues more than :data:`FEW_JOBS`): the smallest that applies to
        the jobs waiting now."""
        self._limit_read = True
        out = self.commands.submit_limit()
        if out is None:
            return
        natives = {tuple(r.resources.get("native") or ()) for r, _ in ready}
        found = [n for nat in natives if (n := self.backend.parse_submit_limit(out, nat))]
        if found:
            self.room.known(min(found), f"{min(found)} queued jobs per user, from accounting")
            log.info("%s allows %d queued jobs per user here", self.backend.name, min(found))

    def _hold_back(
        self,
        ready: list[tuple[JobRecord, list[str]]],
        done: set[str],
        refused: set[str],
        queued: int,
        now: float,
    ) -> bool:
        """Records not submitted this pass wait, with the reason (written when it changes,
        logged once when the throttling starts or changes); True if a record changed."""
        rest = [r for r, _ in ready if r.key not in done]
        if not rest:
            if self._throttled:
                log.info("no longer throttled: every waiting job is submitted")
            self._throttled = None
            return False
        reason = self.room.waiting_for(queued, now)
        if self.room.retry_at is not None:
            self.soon = max(self.room.retry_at - now, 0.5)
        kind = reason.split(";")[0]
        if kind != self._throttled:
            log.info("throttled: %d job(s) %s", len(rest), reason)
            self._throttled = kind
        stale = [r for r in rest if r.reason != reason and r.key not in refused]
        if not stale:
            return False
        with self.store.write() as tx:
            for r in stale:
                tx.update(r.key, reason=reason)
        return True

    def _dependency_ids(self, rec: JobRecord) -> list[str] | str | None:
        """Scheduler ids this job must wait for; "wait" if one is not submitted yet; None if
        one failed (the job is then cancelled)."""
        waiting = self.dependencies(rec)
        if waiting is None:
            return None
        if any(not d.job_id for d in waiting):
            return "wait"
        return sorted(d.job_id for d in waiting if d.job_id)

    def _submit_group(
        self, recs: list[JobRecord], after: list[str], hold: bool, queued: int
    ) -> str:
        """Submit jobs of one kind together: one on its own, more as one array. The intent is
        recorded before the scheduler is called, the job ids after. What became of it:
        SUBMITTED, FAILED, AT_LIMIT, TOO_LARGE or INTERRUPTED."""
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
            shared_dir, files = None, None
        else:
            base = os.path.join(self.arrays_dir, uuid.uuid4().hex[:16])
            spec, body, shared_dir, files = array_submission(
                self.backend, base, recs, res, name, workdir, after=tuple(after), hold=hold
            )
        try:
            directives = self.backend.directives(spec)
        except (BackendError, ValueError) as e:  # cannot be expressed: fail, never retry
            self._fail(recs, f"{self.backend.name} cannot submit this job: {e}")
            return FAILED
        script = submission_script(first.resources.get(FILE_DIRECTIVES, ()), directives, body)
        if files is None:
            self.transport.write_bytes(spec.script, script.encode())
        else:  # a new directory: written at once, the script with the rest
            files.files[spec.script] = script.encode()
            # The parent first where it may be missing: a directory staged without its parent
            # is made again one level at a time (over SSH, several round trips each).
            parent = [] if self._arrays_made else [self.arrays_dir]
            self.transport.stage(parent + files.dirs, files.files, files.links)
            self._arrays_made = True
        with self.store.write() as tx:  # the intent, so a crash here never submits twice
            for r in recs:
                resources = {k: v for k, v in r.resources.items() if k != "array_dir"}
                if shared_dir:
                    resources["array_dir"] = shared_dir
                tx.update(r.key, reason=SUBMITTING + spec.script, resources=resources)
        outcome = self._hand_over(recs, spec, script, queued)
        if outcome not in (FAILED, AT_LIMIT, TOO_LARGE, INTERRUPTED):
            self.last_submitted = time.time()
            self._record_ids(recs, spec, outcome, shared_dir)
            return SUBMITTED
        return outcome

    def _fail(self, recs: list[JobRecord], reason: str) -> None:
        with self.store.write() as tx:
            for r in recs:
                tx.update(r.key, state=JobState.FAILED, finished=time.time(), reason=reason)

    def _hand_over(self, recs: list[JobRecord], spec: SubmitSpec, script: str, queued: int) -> str:
        """Run the submit command: the job id, else what became of the submission. A refusal
        at a limit on queued jobs, or of an array too large, leaves the records waiting; any
        other refusal fails them. If the command's fate is unknown (it timed out, the
        connection dropped), the intent stays and :mod:`hpcexec.schedrecover` decides at the
        next pass."""
        try:
            out = self.commands.run(
                self.backend.submit_argv(spec), input=script if self.backend.submit_stdin else None
            )
        except TransportError as e:
            self.recovery.interrupted[spec.script] = str(e)
            return INTERRUPTED
        text = f"{out.stderr}\n{out.stdout}".strip()
        try:
            if out.ok:
                return self.backend.parse_submit(out.stdout)
            limit = self.backend.submit_limit(text)
            if limit:
                self.room.refused(len(recs), queued, limit, time.time())
                self._unsubmitted(recs, spec, self.room.waiting_for(queued, time.time()))
                return AT_LIMIT
            if (spec.array_size or 0) > 1 and self.backend.refused_array_size(text):
                self.commands.lower_max_array(len(recs) // 2)
                self._unsubmitted(recs, spec, None)
                return TOO_LARGE
            raise SubmitError(f"{self.backend.name} refused the job: {text[:500]}")
        except SubmitError as e:
            log.error("%s", e)
            self._fail(recs, str(e))
            return FAILED

    def _unsubmitted(self, recs: list[JobRecord], spec: SubmitSpec, reason: str | None) -> None:
        """Records the scheduler refused for now: back to waiting, their intent and the
        refused array's files gone."""
        with self.store.write() as tx:
            for r in recs:
                resources = {k: v for k, v in r.resources.items() if k != "array_dir"}
                tx.update(r.key, reason=reason, resources=resources)
        if spec.array_size is not None:
            self.transport.remove_tree(os.path.dirname(spec.script))

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
