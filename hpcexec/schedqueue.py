"""The driver for batch schedulers: submits records, polls them, cancels them.

Submission is decoupled from ``submit()``: records are inserted unsubmitted, and each pass
of the monitor submits what has gathered, as one array per group of jobs with the same
resources, so a loop of ``submit`` calls is a few scheduler calls, not one per job.
Every scheduler command goes through the transport and a rate limit.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import threading
import time
import uuid
from collections import defaultdict
from typing import Any, Sequence

from .backends.base import JobStatus, SchedulerBackend, SubmitSpec
from .driver import NEVER_RAN, QUEUED, TERMINATED_REASON, Driver, cancelled, terminated
from .errors import BackendError, SchedulerOutputError, SubmitError, TransportError
from .jobfiles import killed_by, parse_exitcode, signal_of
from .layout import SCRIPT, SUBMIT_SCRIPT, JobLayout
from .record import JobRecord
from .recovery import Submitted, note_job_ids
from .resources import Resources
from .slots import CLAIMS, SHARE, parse_claims
from .states import JobState
from .store import Store
from .transport.base import Transport

log = logging.getLogger(__name__)

SUBMITTING = "submitting "  # reason prefix of a record whose submission may be under way
FILE_DIRECTIVES = "file_directives"  # record resources: directives of a submitted job file
ID_CHUNK = 500  # job ids per status command
MEMORY_KILL_TAIL = 8192  # bytes of a killed job's stderr searched for a memory kill
LOST_AFTER = 600.0  # seconds a job may be missing from queue and accounting before it is lost
NEVER_STARTED_AFTER = 30.0  # the same for a job that never started
ACTIVE = (*QUEUED, JobState.RUNNING, JobState.SUSPENDED)


class RateLimit:
    """At most ``per_second`` calls per second, spread evenly."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            time.sleep(delay)


class SchedulerQueue(Driver):
    """Submits, watches and controls the jobs of one scheduler backend on one host."""

    def __init__(self, store: Store, transport: Transport, backend: SchedulerBackend,
                 cache_dir: str, *, window: float = 0.2, max_window: float = 2.0,
                 calls_per_second: float = 10.0) -> None:
        self.store = store
        self.transport = transport
        self.backend = backend
        self.host = transport.host
        self.arrays_dir = os.path.join(cache_dir, "arrays")
        self.window = window
        self.max_window = max_window
        self.limit = RateLimit(calls_per_second)
        self._max_array: int | None = None
        self._missing_since: dict[str, float] = {}
        self._claims_seen: dict[str, dict[int, str]] = {}  # array dir -> index -> element
        self._relisted: set[str] = set()  # array dirs whose claims were read again this poll
        self.calls: dict[str, int] = defaultdict(int)  # command name -> times run
        self._soon: float | None = None  # the monitor should look again this soon

    # -- commands ---------------------------------------------------------------------------
    def _run(self, argv: list[str], input: str | None = None, *, query: bool = False):
        """Run a scheduler command; ``query``: it changes nothing, so it may be repeated
        after a dropped connection."""
        self.limit.wait()
        self.calls[argv[0]] += 1
        return self.transport.run(argv, input=input, idempotent=query)

    def max_array(self) -> int:
        if self._max_array is None:
            argv = self.backend.max_array_argv()
            found = None
            if argv:
                try:
                    r = self._run(argv, query=True)
                    found = self.backend.parse_max_array(r.stdout) if r.ok else None
                except TransportError:
                    found = None
            self._max_array = found or self.backend.default_max_array
        return self._max_array

    # -- one pass ----------------------------------------------------------------------------
    @property
    def wake_in(self) -> float | None:
        """Seconds until jobs gathering for one submission are submitted (None: none wait)."""
        return self._soon

    def poll(self) -> bool:
        self._soon = None
        changed = self._submit_waiting()
        changed = self._refresh() or changed
        return changed

    # -- submission --------------------------------------------------------------------------
    def _submit_waiting(self) -> bool:
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
            self._soon = min(self.window - (now - newest), self.max_window - (now - oldest))
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
            res = {k: v for k, v in rec.resources.items()
                   if k not in ("name", "python", "array_dir")}
            key = (json.dumps(res, sort_keys=True), tuple(after), rec.state is JobState.HELD)
            groups[key].append(rec)
        for (_, after, hold), recs in groups.items():
            size = self.max_array()
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

    def single_spec(self, res: Resources, name: str, jobdir: str, workdir: str, *,
                    hold: bool = False, after: tuple[str, ...] = ()) -> SubmitSpec:
        """The submission of one job on its own (not an array)."""
        lay = JobLayout(jobdir, workdir, res.stdout, res.stderr, res.join_output)
        return SubmitSpec(lay.file(SUBMIT_SCRIPT), res, name, lay.stdout, lay.stderr, workdir,
                          hold=hold, after=after)

    def _submit_group(self, recs: list[JobRecord], after: list[str], hold: bool) -> None:
        """Submit jobs of one kind together: one on its own, more as one array. The intent is
        recorded before the scheduler is called, the job ids after."""
        first = recs[0]
        res = Resources.from_dict({k: v for k, v in first.resources.items() if k != "workdir"})
        workdir = JobLayout.of(first.jobdir, first.resources).workdir
        names = {r.name for r in recs}
        name = names.pop() if len(names) == 1 else "hpcexec-batch"
        if len(recs) == 1:
            spec = self.single_spec(res, name, first.jobdir, workdir, hold=hold,
                                    after=tuple(after))
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

    def _array(self, recs: list[JobRecord], res: Resources, name: str, workdir: str,
               after: list[str], hold: bool) -> tuple[SubmitSpec, str, str | None]:
        """An array of ``recs``, its files written in a new directory: its submission, the
        body under its directives, and that directory if its elements share records."""
        base = os.path.join(self.arrays_dir, uuid.uuid4().hex[:16])
        self.transport.make_dir(base)
        pattern = self.backend.array_index_pattern
        for i, r in enumerate(recs, self.backend.array_index_base):
            lay = JobLayout.of(r.jobdir, r.resources)  # each element's output: its own job dir
            self.transport.symlink(lay.stdout, os.path.join(base, f"{i}.out"))
            self.transport.symlink(lay.stderr, os.path.join(base, f"{i}.err"))
        self.transport.write_bytes(os.path.join(base, "jobdirs"),
                                   "".join(r.jobdir + "\n" for r in recs).encode())
        shared = self._shareable(recs, after, hold)
        if shared:
            self._write_share(base, recs, res, name)
        spec = SubmitSpec(os.path.join(base, SUBMIT_SCRIPT), res, name,
                          os.path.join(base, f"{pattern}.out"),
                          os.path.join(base, f"{pattern}.err"), workdir,
                          array_size=len(recs), hold=hold, after=tuple(after),
                          array_limit=recs[0].resources.get("array_limit"))
        qbase = shlex.quote(base)
        body = (f"mapfile -t _hx_dirs < {qbase}/jobdirs\n"
                f"_hx_i={self.backend.array_index_expr}\n")
        if shared:  # run only a record no other element has taken; then maybe more
            body += (f'( set -o noclobber; : > {qbase}/{CLAIMS}/"$_hx_i" ) 2>/dev/null '
                     f"|| exit 0\nexport HPCEXEC_SHARE={qbase}\n")
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
            out = self._run(self.backend.submit_argv(spec),
                            input=script if self.backend.submit_stdin else None)
            if not out.ok:
                raise SubmitError(f"{self.backend.name} refused the job: "
                                  f"{(out.stderr or out.stdout).strip()[:500]}")
            return self.backend.parse_submit(out.stdout)
        except SubmitError as e:
            log.error("%s", e)
            self._fail(recs, str(e))
            return None
        except TransportError:
            # Unknown whether it reached the scheduler: the intent stays, recovery decides.
            log.warning("submitting %s may have failed; checking before any retry", spec.script)
            raise

    def _record_ids(self, recs: list[JobRecord], spec: SubmitSpec, job_id: str,
                    shared_dir: str | None) -> None:
        """Keep the submitted jobs' ids: beside each job, then in the records."""
        ids = {r.jobdir: Submitted(job_id) if spec.array_size is None else
               Submitted(self.backend.element_id(job_id, i), i, shared_dir)
               for i, r in enumerate(recs)}
        note_job_ids(self.transport, ids)  # so a lost cache still knows they were submitted
        with self.store.write() as tx:
            for r in recs:
                tx.update(r.key, job_id=ids[r.jobdir].job_id, reason=None,
                          array_index=ids[r.jobdir].array_index)
        log.info("submitted %d job(s) to %s as %s", len(recs), self.backend.name, job_id)

    def _shareable(self, recs: list[JobRecord], after: list[str], hold: bool) -> bool:
        """Whether the elements of this array may run each other's records: Python jobs
        with one interpreter, not held (a released element must not run held ones), no
        dependencies (the job script's dependency check would be skipped), no ``stdin``
        (tasks forked in one element would share the file's read position)."""
        return (not hold and not after and not recs[0].resources.get("stdin")
                and all(r.kind in ("call", "chunk") for r in recs)
                and len({r.resources.get("python") for r in recs}) == 1
                and recs[0].resources.get("reuse_slots", True) is not False)

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
            r = self._run(argv, query=True)
            if not r.ok:  # the command ran: the scheduler's answer, not the connection
                raise SchedulerOutputError(f"cannot list queued jobs to recover submissions: "
                                           f"{(r.stderr or r.stdout).strip()[:300]}")
            queued = self.backend.parse_find(r.stdout)
        adopted: dict[str, Submitted] = {}
        with self.store.write() as tx:
            for r in recs:
                script = (r.reason or "")[len(SUBMITTING):]
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
                    log.warning("job %s was submitted before a crash as %s; adopting", r.key, job_id)
                    tx.update(r.key, job_id=job_id, array_index=index, reason=None)
                    adopted[r.jobdir] = Submitted(job_id, index, r.resources.get("array_dir"))
                elif self.transport.exists(started):
                    job_id = self.transport.read_bytes(started).decode().split("\n")[0].strip()
                    log.warning("job %s was submitted before a crash as %s; adopting", r.key, job_id)
                    tx.update(r.key, job_id=job_id or None, reason=None)
                else:
                    tx.update(r.key, reason=None, submitted=time.time() - self.max_window)
        note_job_ids(self.transport, adopted)

    # -- status ------------------------------------------------------------------------------
    def _refresh(self) -> bool:
        """Bring the submitted records up to date: the status of every job in one command per
        chunk of ids, then the exit-code files and accounting of those that ended."""
        active = self.store.jobs_in(self.backend.name, self.host, ACTIVE, submitted=True)
        if not active:
            return False
        updates: dict[str, dict[str, Any]] = defaultdict(dict)
        self._claims_seen = {}
        self._relisted = set()
        drop = self._follow_claims(active, updates)
        seen = self._statuses(sorted({r.job_id for r in active if r.job_id}))
        if seen is None:
            return False
        now = time.time()
        gone, unexplained, never = self._compare(active, seen, updates, now)
        if unexplained:
            acct = self._accounting([r for r, _ in unexplained])
            for rec, st in unexplained:
                updates[rec.key].update(self._final(rec, acct.get(rec.job_id or "", st), now, None))
        if never or drop:  # elements with nothing left to do need not start
            for i in range(0, len(never + drop), ID_CHUNK):
                self._run(self.backend.cancel_argv((never + drop)[i : i + ID_CHUNK]))
        if gone:
            for key, values in self._judge_gone(gone, now).items():
                updates[key].update(values)
        updates = {k: v for k, v in updates.items() if v}
        if not updates:
            return False
        with self.store.write() as tx:
            for key, values in updates.items():
                tx.update(key, **values)
        return True

    def _statuses(self, ids: list[str]) -> dict[str, JobStatus] | None:
        """What the scheduler's status command says of these jobs; None (logged) where its
        answer cannot be read."""
        seen: dict[str, JobStatus] = {}
        try:
            for i in range(0, len(ids), ID_CHUNK):
                out = self._run(self.backend.status_argv(ids[i : i + ID_CHUNK]), query=True)
                seen.update(self.backend.parse_status(out.stdout, out.stderr, out.returncode))
        except SchedulerOutputError as e:
            # The command ran (a dropped connection is a TransportError, left to the
            # monitor): the jobs keep their last state until an answer can be read.
            log.warning("cannot read %s's job status this time: %s; asking again at the "
                        "next poll", self.backend.name, e)
            return None
        return seen

    def _compare(self, active: list[JobRecord], seen: dict[str, JobStatus],
                 updates: dict[str, dict[str, Any]], now: float
                 ) -> tuple[list[JobRecord], list[tuple[JobRecord, JobStatus]], list[str]]:
        """Note in ``updates`` what the status changed; return the jobs gone from the queue,
        those that ended without saying how, and the ids of those whose dependency failed."""
        gone: list[JobRecord] = []
        unexplained: list[tuple[JobRecord, JobStatus]] = []
        never: list[str] = []  # waiting on a dependency that failed: cancelled in one call
        exits = self._exit_files([r for r in active if (st := seen.get(r.job_id or ""))
                                  and st.state.finished])
        for rec in active:
            st = seen.get(rec.job_id or "")
            if st is None:
                gone.append(rec)
                continue
            self._missing_since.pop(rec.key, None)
            if st.state.finished:
                found = exits[rec.key]
                by = None if found else self._taken_elsewhere(rec)
                if by:  # another element runs it: follow that one from the next poll
                    updates[rec.key]["job_id"] = by
                elif found is None and st.exit_code is None and st.state is not JobState.COMPLETED:
                    unexplained.append((rec, st))  # accounting may say how it ended
                else:
                    updates[rec.key].update(self._final(rec, st, now, found))
            elif st.reason == "DependencyNeverSatisfied":
                never.append(rec.job_id or "")
                updates[rec.key].update(state=JobState.CANCELLED, finished=now,
                                        reason=f"a dependency failed; {NEVER_RAN}")
            elif st.state is not rec.state:
                updates[rec.key]["state"] = st.state
                if st.state.started and not rec.started:
                    updates[rec.key]["started"] = now
        return gone, unexplained, never

    def _claims(self, array_dir: str) -> dict[int, str]:
        """Which element ran each record of a shared array that another element took
        (read once per poll)."""
        if array_dir not in self._claims_seen:
            names = self.transport.list_dir(os.path.join(array_dir, CLAIMS))
            self._claims_seen[array_dir] = parse_claims(names)[1]
        return self._claims_seen[array_dir]

    def _follow_claims(self, active: list[JobRecord],
                       updates: dict[str, dict[str, Any]]) -> list[str]:
        """Point records that another element of their array took at that element; returns
        the ids of their own elements that have not started (they need not)."""
        drop = []
        for rec in active:
            array_dir = rec.resources.get("array_dir")
            if not array_dir or rec.array_index is None:
                continue
            by = self._claims(array_dir).get(rec.array_index)
            if by and by != rec.job_id:
                if rec.state is JobState.PENDING and rec.job_id:
                    drop.append(rec.job_id)
                rec.job_id = by
                updates[rec.key]["job_id"] = by
        return drop

    def _taken_elsewhere(self, rec: JobRecord) -> str | None:
        """The element running ``rec`` if not its own, looking again now: its own element
        may have found it taken and ended since the claims were read."""
        array_dir = rec.resources.get("array_dir")
        if not array_dir or rec.array_index is None:
            return None
        if array_dir not in self._relisted:  # once per poll: the status was read before
            self._relisted.add(array_dir)
            self._claims_seen.pop(array_dir, None)
        by = self._claims(array_dir).get(rec.array_index)
        return by if by and by != rec.job_id else None

    def _exit_files(self, recs: list[JobRecord]
                    ) -> dict[str, tuple[int | None, str | None] | None]:
        """Each record's exit-code file, parsed (None: it has none yet), all read together
        (over SSH: in two round trips, not two per job)."""
        paths = {r.key: JobLayout.of(r.jobdir, r.resources).exitcode for r in recs}
        got = self.transport.read_files(list(paths.values())) if paths else {}
        return {key: None if got[p] is None else parse_exitcode(got[p].decode())
                for key, p in paths.items()}

    def _final(self, rec: JobRecord, st: JobStatus, now: float,
               found: tuple[int | None, str | None] | None) -> dict[str, Any]:
        """A finished job's fields: the scheduler's state, the exit code from the job's own
        exit-code file (``found``: what it held, None if it has none) else from the scheduler."""
        code, reason = found if found else (st.exit_code, None)
        state = st.state
        if (found and rec.resources.get("array_dir") and reason is None and code is not None
                and 0 <= code < 128):
            # It ended by itself inside an element that ran others too: the element's end
            # (a later task's walltime kill, say) is not this record's.
            return dict(state=JobState.COMPLETED if code == 0 else JobState.FAILED,
                        exit_code=code, signal=None, reason=None, finished=now,
                        started=rec.started or now)
        if state is JobState.COMPLETED and code not in (0, None):
            state = JobState.FAILED
        why = st.reason or reason
        if state is JobState.CANCELLED and terminated(rec):
            why = TERMINATED_REASON  # we asked for it: say so, whatever the scheduler calls it
        sig = st.signal if st.signal else signal_of(code)
        if why is None and sig and state is not JobState.COMPLETED:
            why = killed_by(sig)
        if state is not JobState.COMPLETED and found is None and not terminated(rec):
            killed = self._memory_kill(rec)
            if killed:
                state, why = JobState.FAILED, f"out of memory: {killed}"
        return dict(state=state, exit_code=code, signal=sig, reason=why,
                    finished=now, started=rec.started or now)

    def _memory_kill(self, rec: JobRecord) -> str | None:
        """The scheduler's words in the stderr of a job it killed for its memory, if any (a
        job killed before its runner wrote an exit code; read once, as it ends)."""
        try:
            tail = self.transport.read_tail(
                JobLayout.of(rec.jobdir, rec.resources).stderr_target, MEMORY_KILL_TAIL)
        except (OSError, TransportError):
            return None
        return self.backend.memory_kill(tail)

    def _judge_gone(self, recs: list[JobRecord], now: float) -> dict[str, dict[str, Any]]:
        """Jobs no longer in the queue: their exit-code file first, then accounting; a job in
        neither is still finishing (accounting lags) until LOST_AFTER has passed."""
        out: dict[str, dict[str, Any]] = {}
        ask: list[JobRecord] = []
        exit_files = self._exit_files(recs)
        for rec in recs:
            found = exit_files[rec.key]
            by = None if found else self._taken_elsewhere(rec)
            if by:
                out[rec.key] = dict(job_id=by)
                self._missing_since.pop(rec.key, None)
            elif found is not None and found[0] == 0:
                out[rec.key] = dict(state=JobState.COMPLETED, exit_code=0, finished=now,
                                    started=rec.started or now)
            else:
                ask.append(rec)
        acct: dict[str, JobStatus] = {}
        argv = self.backend.accounting_argv([r.job_id for r in ask if r.job_id]) if ask else None
        if argv:
            r = self._run(argv, query=True)
            if r.ok:
                acct = self.backend.parse_accounting(r.stdout)
        for rec in ask:
            st = acct.get(rec.job_id or "")
            found = exit_files[rec.key]
            if st is not None and st.state.finished:
                out[rec.key] = self._final(rec, st, now, found)
                continue
            if found is not None and argv is None:  # no accounting: the file decides
                code, reason = found
                out[rec.key] = dict(state=JobState.FAILED, exit_code=code, reason=reason,
                                    finished=now, started=rec.started or now)
                continue
            first = self._missing_since.setdefault(rec.key, now)
            never_started = not rec.started and not self.transport.exists(
                JobLayout.of(rec.jobdir, rec.resources).started)
            if never_started and now - first > NEVER_STARTED_AFTER:
                # Deleted while pending (SGE keeps no accounting record of such jobs).
                out[rec.key] = dict(state=JobState.CANCELLED, finished=now,
                                    reason="left the queue without starting and is not in "
                                           "accounting (deleted outside hpcexec?)")
            elif now - first > LOST_AFTER:
                out[rec.key] = dict(state=JobState.LOST, finished=now,
                                    reason="left the queue and is not in accounting")
        return out

    # -- control -----------------------------------------------------------------------------
    def cancel(self, key: str) -> bool:
        with self.store.write() as tx:
            rec = tx.get(key)
            if rec is None or rec.state not in QUEUED:
                return False
            if rec.job_id is None and not (rec.reason or "").startswith(SUBMITTING):
                cancelled(tx, key, "cancelled before it was submitted")
                return True
        if rec.job_id is None:
            return False
        array_dir = rec.resources.get("array_dir")
        if array_dir and rec.array_index is not None:
            # Claim it first, so no element of its array can start it from now on.
            if not self.transport.create_exclusive(
                    os.path.join(array_dir, CLAIMS, str(rec.array_index)), b"cancelled"):
                return False  # an element has it: it is running
            self._run(self.backend.cancel_argv([rec.job_id]))
        elif not self._run(self.backend.cancel_argv([rec.job_id])).ok:
            return False
        with self.store.write() as tx:
            cancelled(tx, key)
        return True

    def _stop(self, rec: JobRecord) -> bool:
        """The scheduler's cancel command for a started job."""
        assert rec.job_id
        return self._run(self.backend.cancel_argv([rec.job_id])).ok

    def preview(self, script: str, res: Resources, name: str, lay: JobLayout, *,
                hold: bool, after: tuple[str, ...], file_directives: Sequence[str]) -> str:
        """The submission script of one job on its own: directives, then the job script."""
        spec = self.single_spec(res, name, lay.jobdir, lay.workdir, hold=hold, after=after)
        body = single_body(self.backend, script, lay.script)
        return submission_script(file_directives, self.backend.directives(spec), body)

    def hold(self, key: str) -> bool:
        """Keep a job that has not started from starting (the scheduler's hold) until
        :meth:`release`. False if it has started, or is being submitted at this moment."""
        with self.store.write() as tx:
            rec = tx.get(key)
            if rec is None or rec.state not in QUEUED:
                return False
            if rec.state is JobState.HELD:
                return True
            if rec.resources.get("array_dir"):
                raise BackendError(
                    f"job {key} is an element of an array whose elements run each other's "
                    f"tasks, so holding its element would not stop it; cancel it instead, "
                    f"or submit with reuse_slots=False to hold elements one by one")
            if rec.job_id is None and not (rec.reason or "").startswith(SUBMITTING):
                tx.update(key, state=JobState.HELD)  # it is submitted held when its turn comes
                return True
        if rec.job_id is None:
            return False
        r = self._run(self.backend.hold_argv([rec.job_id]))
        if not r.ok:
            log.warning("%s", (r.stderr or r.stdout).strip())
            return False
        with self.store.write() as tx:
            tx.update(key, state=JobState.HELD)
        return True

    def release(self, key: str) -> bool:
        rec = self.store.get(key)
        if rec is None or rec.state is not JobState.HELD:
            return False
        if rec.job_id is None:
            with self.store.write() as tx:
                tx.update(key, state=JobState.PENDING)
            return True
        ok = self._run(self.backend.release_argv([rec.job_id])).ok
        if ok:
            with self.store.write() as tx:
                tx.update(key, state=JobState.PENDING)
        return ok

    def suspend(self, key: str) -> bool:
        return self._signal(key, JobState.RUNNING, self.backend.suspend_argv, JobState.SUSPENDED)

    def resume(self, key: str) -> bool:
        return self._signal(key, JobState.SUSPENDED, self.backend.resume_argv, JobState.RUNNING)

    def _signal(self, key: str, want: JobState, argv_of, becomes: JobState) -> bool:
        rec = self.store.get(key)
        if rec is None or rec.state is not want or not rec.job_id:
            return False
        r = self._run(argv_of([rec.job_id]))
        if not r.ok:
            log.warning("%s", (r.stderr or r.stdout).strip())
            return False
        with self.store.write() as tx:
            tx.update(key, state=becomes)
        return True

    def _accounting(self, recs: list[JobRecord]) -> dict[str, JobStatus]:
        """What accounting says of these finished jobs, in one call ({} if it cannot)."""
        argv = self.backend.accounting_argv([r.job_id for r in recs if r.job_id])
        if not argv:
            return {}
        try:
            r = self._run(argv, query=True)
        except TransportError:
            return {}
        found = self.backend.parse_accounting(r.stdout) if r.ok else {}
        return {k: v for k, v in found.items() if v.state.finished}

    def accounting(self, rec: JobRecord) -> JobStatus | None:
        """What the scheduler's accounting says of a finished job (None if nothing)."""
        argv = self.backend.accounting_argv([rec.job_id]) if rec.job_id else None
        if not argv:
            return None
        try:
            r = self._run(argv, query=True)
        except TransportError:
            return None
        return self.backend.parse_accounting(r.stdout).get(rec.job_id or "") if r.ok else None


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


def submission_script(file_directives: Sequence[str], directives: Sequence[str],
                      body: str) -> str:
    """What is given to the scheduler: a shebang, the directives of a submitted job file
    (``Executor.submit_file``), then hpcexec's, which come later and so win where both set
    one option (SLURM and Grid Engine take the last), then the body."""
    return "\n".join(["#!/bin/bash", *file_directives, *directives, body]) + "\n"

