"""The status poll: one status command per chunk of ids (the claims of shared arrays read
beside it, :mod:`hpcexec.schedclaims`), then the exit-code files and the accounting of the
jobs that ended or left the queue."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from . import attempts
from .backends.base import JobStatus, SchedulerBackend
from .checkpoint import CHECKPOINTED
from .driver import NEVER_RAN, QUEUED, TERMINATED_REASON, terminated
from .errors import SchedulerOutputError, TransportError
from .jobfiles import killed_by, parse_exitcode, signal_of
from .layout import JobLayout
from .record import JobRecord
from .schedclaims import PassClaims
from .schedcommands import SchedulerCommands
from .states import FINAL_STATES, JobState
from .store import Store
from .transport.base import Transport

# The scheduler driver's logger, whichever of its modules writes: users filter on it.
log = logging.getLogger("hpcexec.schedqueue")

ID_CHUNK = 500  # job ids per status command
MEMORY_KILL_TAIL = 8192  # bytes of a killed job's stderr searched for a memory kill
LOST_AFTER = 600.0  # seconds a job may be missing from queue and accounting before it is lost
NEVER_STARTED_AFTER = 30.0  # the same for a job that never started
ACTIVE = (*QUEUED, JobState.RUNNING, JobState.SUSPENDED)
PEEK_MAX = 16  # jobs whose exit-code files a peek reads; more are left to the status command
REASKS = 6  # times the status is asked again soon about a job ending after its file said 0


def completed(
    rec: JobRecord, found: tuple[int | None, str | None] | None, now: float
) -> dict[str, Any] | None:
    """A job's fields where its exit-code file (``found``, parsed; None: none yet) says it
    completed: exit code 0, the last thing its script writes, so its result is whole
    whatever the scheduler lists; None otherwise (a failure is the scheduler's to explain)."""
    if found is None or found[0] != 0:
        return None
    return dict(state=JobState.COMPLETED, exit_code=0, finished=now, started=rec.started or now)


class StatusPoll:
    """Brings the submitted records of one backend on one host up to date, a pass at a
    time; remembers between passes how long each job has been missing."""

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
        self.host = transport.host
        self._missing_since: dict[str, float] = {}
        self.claims = PassClaims(transport)  # of shared arrays, as this pass read them
        self.watched: list[JobRecord] = []  # what the last status left active, if few
        self._peeked: dict[str, Any] = {}  # key -> its exit-code file, 0, as the last peek read
        # Jobs completed by their exit-code file while the scheduler still listed them
        # (key -> job id): they count against its limit on queued jobs until it lists them
        # ended, so the status asks after them until then.
        self.lingering: dict[str, str] = {}
        # Jobs whose exit-code file said 0 while the scheduler listed them as ending (key ->
        # times asked since): SLURM's COMPLETING lasts a fraction of a second, so the status
        # is asked again soon, at most REASKS times, not at the end of its interval.
        self.completing: dict[str, int] = {}

    def refresh(self) -> bool:
        """Bring the submitted records up to date: the status of every job in one command per
        chunk of ids, then the exit-code files and accounting of those that ended."""
        active = self.store.jobs_in(self.backend.name, self.host, ACTIVE, submitted=True)
        self.watched = []
        if not active and not self.lingering:
            return False
        updates: dict[str, dict[str, Any]] = defaultdict(dict)
        self.claims.new_pass()
        ids = {r.job_id for r in active if r.job_id} | set(self.lingering.values())
        # over SSH the claims take three round trips, the status command one: side by side
        seen = self.claims.read_beside(active, lambda: self._statuses(sorted(ids)))
        if seen is None:
            return False
        drop = self.claims.follow(active, updates)
        followed = sorted({r.job_id for r in active if r.job_id} - ids - set(seen))
        if followed:  # elements the claims named that the status command was not asked of
            more = self._statuses(followed)
            if more is None:
                return False
            seen.update(more)
        self.lingering = {
            k: j for k, j in self.lingering.items() if (st := seen.get(j)) and not st.state.finished
        }
        now = time.time()
        peeked, self._peeked = self._peeked, {}
        gone, unexplained, never = self._compare(active, seen, updates, now, peeked)
        if unexplained:
            acct = self.commands.finished_in_accounting([r for r, _ in unexplained])
            for rec, st in unexplained:
                updates[rec.key].update(self._final(rec, acct.get(rec.job_id or "", st), now, None))
        if never or drop:  # elements with nothing left to do need not start
            for i in range(0, len(never + drop), ID_CHUNK):
                self.commands.run(self.backend.cancel_argv((never + drop)[i : i + ID_CHUNK]))
        if gone:
            for key, values in self._judge_gone(gone, now).items():
                updates[key].update(values)
        updates = {k: v for k, v in updates.items() if v}
        self.completing = {
            r.key: n + 1
            for r in active
            if (n := self.completing.get(r.key, 0 if r.key in peeked else REASKS)) < REASKS
            and updates.get(r.key, {}).get("state", r.state) in ACTIVE
            and getattr(seen.get(r.job_id or ""), "ending", False)
        }
        if len(active) <= PEEK_MAX:  # ending: how is the scheduler's to say, not the file's
            self.watched = [
                r
                for r in active
                if updates.get(r.key, {}).get("state", r.state) in ACTIVE
                and not getattr(seen.get(r.job_id or ""), "ending", False)
                and r.key not in peeked  # a peek asks once: its status decides from now
            ]
        return self._write(active, updates)

    def peek(self) -> bool:
        """Between status commands, with no scheduler command: read the exit-code files of
        the jobs the last status left active (:attr:`watched`); True where one says the job
        completed (exit code 0): the status command is then due at once, and a job it still
        lists as running is completed by its file (one it lists as ending or ended is judged
        as ever: a job cancelled that exited 0 on the way stays cancelled)."""
        if not self.watched:
            return False
        exits = self._exit_files(self.watched)
        self._peeked = {k: found for k, found in exits.items() if found and found[0] == 0}
        return bool(self._peeked)

    def _write(self, active: list[JobRecord], updates: dict[str, dict[str, Any]]) -> bool:
        """Write what a status pass found (True if anything); an ended job with a retry left
        may run again instead (:func:`hpcexec.attempts.settle`)."""
        if not updates:
            return False
        ended = {r.key: r for r in active if updates.get(r.key, {}).get("state") in FINAL_STATES}
        for key, rec in ended.items():
            updates[key] = attempts.settle(self.transport, rec, updates[key])
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
                out = self.commands.run(self.backend.status_argv(ids[i : i + ID_CHUNK]), query=True)
                seen.update(self.backend.parse_status(out.stdout, out.stderr, out.returncode))
        except SchedulerOutputError as e:
            # The command ran (a dropped connection is a TransportError, left to the
            # monitor): the jobs keep their last state until an answer can be read.
            log.warning(
                "cannot read %s's job status this time: %s; asking again at the next poll",
                self.backend.name,
                e,
            )
            return None
        return seen

    def _compare(
        self,
        active: list[JobRecord],
        seen: dict[str, JobStatus],
        updates: dict[str, dict[str, Any]],
        now: float,
        peeked: dict[str, Any],
    ) -> tuple[list[JobRecord], list[tuple[JobRecord, JobStatus]], list[str]]:
        """Note in ``updates`` what the status changed; return the jobs gone from the queue,
        those that ended without saying how, and the ids of those whose dependency failed.
        ``peeked``: the exit-code files saying 0 that a peek found (see :meth:`peek`)."""
        gone: list[JobRecord] = []
        unexplained: list[tuple[JobRecord, JobStatus]] = []
        never: list[str] = []  # waiting on a dependency that failed: cancelled in one call
        ended = [r for r in active if (st := seen.get(r.job_id or "")) and st.state.finished]
        exits = self._exit_files(ended)
        self.claims.relist(ended, exits)
        for rec in active:
            st = seen.get(rec.job_id or "")
            if st is None:
                gone.append(rec)
                continue
            self._missing_since.pop(rec.key, None)
            if st.state.finished:
                found = exits[rec.key]
                by = None if found else self.claims.taken_elsewhere(rec)
                if by:  # another element runs it: follow that one from the next poll
                    updates[rec.key]["job_id"] = by
                elif found is None and st.exit_code is None and st.state is not JobState.COMPLETED:
                    unexplained.append((rec, st))  # accounting may say how it ended
                else:
                    updates[rec.key].update(self._final(rec, st, now, found))
            elif rec.key in peeked and st.state is JobState.RUNNING and not st.ending:
                # listed running, its end not reported yet: it ended by itself
                updates[rec.key].update(completed(rec, peeked[rec.key], now) or {})
                self.lingering[rec.key] = rec.job_id or ""
            elif st.reason == "DependencyNeverSatisfied":
                never.append(rec.job_id or "")
                updates[rec.key].update(
                    state=JobState.CANCELLED,
                    finished=now,
                    reason=f"a dependency failed; {NEVER_RAN}",
                )
            elif st.state is not rec.state:
                updates[rec.key]["state"] = st.state
                if st.state.started and not rec.started:
                    updates[rec.key]["started"] = now
        return gone, unexplained, never

    def _exit_files(self, recs: list[JobRecord]) -> dict[str, tuple[int | None, str | None] | None]:
        """Each record's exit-code file, parsed (None: it has none yet), all read together
        (over SSH: in two round trips, not two per job)."""
        paths = {r.key: JobLayout.of(r.jobdir, r.resources).exitcode for r in recs}
        got = self.transport.read_files(list(paths.values())) if paths else {}
        return {
            key: None if (data := got[p]) is None else parse_exitcode(data.decode())
            for key, p in paths.items()
        }

    def _final(
        self, rec: JobRecord, st: JobStatus, now: float, found: tuple[int | None, str | None] | None
    ) -> dict[str, Any]:
        """A finished job's fields: the scheduler's state, the exit code from the job's own
        exit-code file (``found``: what it held, None if it has none) else from the scheduler."""
        code, reason = found if found else (st.exit_code, None)
        state = st.state
        if (
            found
            and rec.resources.get("array_dir")
            and reason is None
            and code is not None
            and 0 <= code < 128
        ):
            # It ended by itself inside an element that ran others too: the element's end
            # (a later task's walltime kill, say) is not this record's.
            return dict(
                state=JobState.COMPLETED if code == 0 else JobState.FAILED,
                exit_code=code,
                signal=None,
                reason=None,
                finished=now,
                started=rec.started or now,
            )
        if state is JobState.COMPLETED and code not in (0, None):
            state = JobState.FAILED
        # the job's own word that it checkpointed outranks the scheduler's (a kill at h_rt)
        why = reason if (reason or "").startswith(CHECKPOINTED) else st.reason or reason
        if state is JobState.CANCELLED and terminated(rec):
            why = TERMINATED_REASON  # we asked for it: say so, whatever the scheduler calls it
        sig = st.signal if st.signal else signal_of(code)
        if why is None and sig and state is not JobState.COMPLETED:
            why = killed_by(sig)
        if state is not JobState.COMPLETED and found is None and not terminated(rec):
            killed = self._memory_kill(rec)
            if killed:
                state, why = JobState.FAILED, f"out of memory: {killed}"
        return dict(
            state=state,
            exit_code=code,
            signal=sig,
            reason=why,
            finished=now,
            started=rec.started or now,
        )

    def _memory_kill(self, rec: JobRecord) -> str | None:
        """The scheduler's words in the stderr of a job it killed for its memory, if any (a
        job killed before its runner wrote an exit code; read once, as it ends)."""
        try:
            tail = self.transport.read_tail(
                JobLayout.of(rec.jobdir, rec.resources).stderr_target, MEMORY_KILL_TAIL
            )
        except (OSError, TransportError):
            return None
        return self.backend.memory_kill(tail)

    def _judge_gone(self, recs: list[JobRecord], now: float) -> dict[str, dict[str, Any]]:
        """Jobs no longer in the queue: their exit-code file first, then accounting; a job in
        neither is still finishing (accounting lags) until LOST_AFTER has passed."""
        out: dict[str, dict[str, Any]] = {}
        ask: list[JobRecord] = []
        exit_files = self._exit_files(recs)
        self.claims.relist(recs, exit_files)
        for rec in recs:
            found = exit_files[rec.key]
            by = None if found else self.claims.taken_elsewhere(rec)
            if by:
                out[rec.key] = dict(job_id=by)
                self._missing_since.pop(rec.key, None)
            elif (values := completed(rec, found, now)) is not None:
                out[rec.key] = values
            else:
                ask.append(rec)
        acct: dict[str, JobStatus] = {}
        argv = self.backend.accounting_argv([r.job_id for r in ask if r.job_id]) if ask else None
        if argv:
            r = self.commands.run(argv, query=True)
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
                out[rec.key] = dict(
                    state=JobState.FAILED,
                    exit_code=code,
                    reason=reason,
                    finished=now,
                    started=rec.started or now,
                )
                continue
            first = self._missing_since.setdefault(rec.key, now)
            never_started = not rec.started and not self.transport.exists(
                JobLayout.of(rec.jobdir, rec.resources).started
            )
            if never_started and now - first > NEVER_STARTED_AFTER:
                # Deleted while pending (SGE keeps no accounting record of such jobs).
                out[rec.key] = dict(
                    state=JobState.CANCELLED,
                    finished=now,
                    reason="left the queue without starting and is not in "
                    "accounting (deleted outside hpcexec?)",
                )
            elif now - first > LOST_AFTER:
                out[rec.key] = dict(
                    state=JobState.LOST,
                    finished=now,
                    reason="left the queue and is not in accounting",
                )
        return out
