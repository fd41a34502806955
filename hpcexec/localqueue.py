"""The core-aware queue of the local backend.

Pending local jobs are records; any client on this host that opens the cache advances
them. Jobs are started under the cache's start lock, which every starter and every change of a
queued record (cancel, hold, release) takes: the core accounting and the choice read the store
in one write transaction, the chosen jobs are started outside it (so submissions are not kept
waiting on process starts), and a second one records them. Two clients on one cache so never
start more than the cores allow, and a client that dies mid-start leaves queued records whose
job directories say what was started (adopted, never run twice).

GPUs are accounted the same way: the backend's pool (``LocalBackend.gpu_ids``) less the ids
the running records hold (their ``gpu_ids``, written when they start) are free; a job is
started only with as many free ones as it needs, given in ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import attempts
from .backends.local import (
    LocalBackend,
    hand_out_gpus,
    parse_proc_stat,
    plan_starts,
    split_job_id,
)
from .driver import QUEUED, TERMINATED_REASON, Driver, cancelled, terminated
from .jobfiles import killed_by, parse_exitcode, signal_of
from .lanerun import LANE
from .layout import JobLayout
from .locallanes import LANE_POLL, Lanes, first_of
from .localstart import Starter
from .localstop import STOPPED_REASONS, Stopper
from .record import JobRecord
from .resourcevalues import instant_epoch
from .states import FINAL_STATES, JobState
from .store import Store
from .store_queries import Txn
from .transport.base import Transport

log = logging.getLogger(__name__)

ZOMBIE_GRACE = 5.0
RUNNING_STATES = (JobState.RUNNING, JobState.SUSPENDED)
START_LOCK = "localqueue"  # the cache's lock held while jobs are started or queued ones change


@dataclass
class _Seen:
    """What one look at a running job found."""

    key: str
    state: JobState
    values: dict[str, Any]
    basis: str | None = None  # the record's reason when it was looked at


class LocalQueue(Driver):
    """Starts, watches and stops local jobs of one host."""

    def __init__(
        self, store: Store, transport: Transport, backend: LocalBackend, key_file: str
    ) -> None:
        self.store = store
        self.transport = transport
        self.backend = backend
        self.starter = Starter(transport, backend, key_file, self._watch)
        self.host = transport.host
        self._pidfds: dict[str, int] = {}  # job id -> pidfd, to wake the monitor on exit
        self._zombies: dict[str, float] = {}  # job id -> when first seen ended but unreaped
        self.stopper = Stopper(transport)  # walltimes and deadlines
        self.lanes = Lanes(store, transport, backend.name, transport.host, backend.total_cores)

    # -- looking at running jobs -----------------------------------------------------------
    def _alive(self, job_id: str) -> bool:
        pid, start = split_job_id(job_id)
        text = self.transport.process_stat(pid)
        st = parse_proc_stat(text) if text else None
        if st is None or st.state == "X" or (start and st.start != start):
            return False
        if st.state == "Z":
            # Ended, not yet reaped by its parent (the fork server records a kill in the
            # exit-code file before it reaps): still finishing, for a while.
            first = self._zombies.setdefault(job_id, time.monotonic())
            return time.monotonic() - first < ZOMBIE_GRACE
        return True

    def _final_values(self, rec: JobRecord) -> dict[str, Any] | None:
        """The record's final fields if the job has ended, else None."""
        exit_file = JobLayout.of(rec.jobdir, rec.resources).exitcode
        try:
            text = self.transport.read_bytes(exit_file).decode(errors="replace")
        except FileNotFoundError:
            text = None
        now = time.time()
        if text is not None:
            code, reason = parse_exitcode(text)
            sig = signal_of(code)
            state = JobState.COMPLETED if code == 0 else JobState.FAILED
            if rec.reason in STOPPED_REASONS:
                state, reason = JobState.TIMEOUT, f"{rec.reason} ({reason or 'stopped'})"
            elif terminated(rec):
                state, reason = JobState.CANCELLED, TERMINATED_REASON
            return dict(state=state, exit_code=code, signal=sig, reason=reason, finished=now)
        if rec.job_id and self._alive(rec.job_id):
            return None
        if rec.job_id and os.path.exists(exit_file):  # written between the two looks
            return self._final_values(rec)
        pid = split_job_id(rec.job_id)[0] if rec.job_id else 0
        status = self.transport.exit_status(pid) if pid else None
        if status is not None and status < 0:
            sig = -status
            reason = f"{killed_by(sig)}, before it wrote an exit code"
            state = JobState.FAILED
            if rec.reason in (*STOPPED_REASONS, TERMINATED_REASON):
                state = JobState.TIMEOUT if rec.reason in STOPPED_REASONS else JobState.CANCELLED
                reason = f"{rec.reason}; {reason}"
            return dict(state=state, exit_code=None, signal=sig, reason=reason, finished=now)
        if status is not None and status > 0:  # os._exit, or a crash in C code
            return dict(
                state=JobState.FAILED,
                exit_code=status,
                finished=now,
                reason=f"exited with code {status} before writing a result",
            )
        return dict(
            state=JobState.LOST,
            reason="the job's process is gone and wrote no exit code",
            finished=now,
        )

    def _look(self, rec: JobRecord, now: float) -> _Seen | None:
        values = self._final_values(rec)
        if values is not None:
            return _Seen(rec.key, values["state"], values, rec.reason)
        reason = self.stopper.look(rec, now)
        return None if reason is None else _Seen(rec.key, rec.state, {"reason": reason})

    # -- one pass ------------------------------------------------------------------------------
    def poll(self) -> bool:
        """Bring running records up to date, then start what fits. True if anything changed."""
        now = time.time()
        running = self.store.jobs_in(self.backend.name, self.host, RUNNING_STATES)
        seen = [s for s in (self._look(r, now) for r in running) if s is not None]
        ended = {s.key for s in seen if s.state.finished}
        self.lanes.ended([now - r.started for r in running if r.key in ended and r.started])
        self._track({r.job_id for r in running if r.job_id and r.key not in ended})
        used = sum(r.cores for r in running if r.key not in ended)
        has_pending = self.store.any_in(self.backend.name, self.host, [JobState.PENDING])
        expired = bool(self.store.past_deadline(self.backend.name, self.host, now))
        found, orphans = (
            self.lanes.look(self._final_values, self._alive)
            if has_pending and self.lanes.due()
            else ([], [])
        )
        if orphans:
            log.warning("%d job(s) of a lane whose process is gone are queued again", len(orphans))
        laned = [_Seen(key, values["state"], values) for key, values in found]
        if not (seen or expired or laned or orphans) and not (
            has_pending and used < self.backend.total_cores
        ):
            return False
        started = self._advance(now, seen + laned, expired, has_pending, orphans)
        return bool(ended or started or seen or laned or orphans)

    def _track(self, job_ids: set[str]) -> None:
        for job_id in set(self._pidfds) - job_ids:
            os.close(self._pidfds.pop(job_id))
        for job_id in set(self._zombies) - job_ids:
            del self._zombies[job_id]
        self.stopper.keep(job_ids)
        if not hasattr(os, "pidfd_open") or not job_ids:
            return
        for job_id in job_ids - set(self._pidfds):
            try:
                self._pidfds[job_id] = os.pidfd_open(split_job_id(job_id)[0])
            except OSError:  # gone already, or pidfds unsupported: polling still sees it
                pass

    _next_begin: float | None = None  # the earliest begin time of a job waiting for it

    @property
    def wake_in(self) -> float | None:
        """Seconds until a waiting job's begin time (None: no job waits for one)."""
        left = self._next_begin - time.time() if self._next_begin is not None else 0
        if self.lanes.active:
            left = min(left, LANE_POLL) if left > 0 else LANE_POLL
        return left if left > 0 else None

    def close(self) -> None:
        self._track(set())

    def wait_fds(self) -> list[int]:
        """File descriptors that become readable when a running local job ends (none while
        lanes run: their jobs' ends are gathered, :data:`LANE_POLL`)."""
        return [] if self.lanes.active else list(self._pidfds.values())

    def _advance(
        self, now: float, seen: list[_Seen], expired: bool, pending: bool, back: list[JobRecord]
    ) -> int:
        """Record what the looks saw (``back``: jobs taken out of lanes, queued again), cancel
        the queued jobs past their deadline, then start what fits, each with its lane (the
        locks: see the module's docstring). How many were chosen to start."""
        with self.store.exclusive(START_LOCK):
            with self.store.write() as tx:
                self.lanes.unmark(tx, back)
                self.lanes.unstarted(tx)
                self._record_seen(tx, seen)
                if expired:
                    self._cancel_expired(tx, now)
                chosen = self._choose(tx) if pending else []
                lanes = self.lanes.form(tx, [rec for rec, gpus in chosen if not gpus])
            # Outside the write transaction: each start waits on a process, or the fork server
            started = [
                (rec, *self.starter.start(rec, gpus, lanes.get(rec.key, ())))
                for rec, gpus in chosen
            ]
            if started:
                with self.store.write() as tx:
                    for rec, values, handed in started:
                        self._record_start(tx, rec, values)
                        kept = {r.key for r in handed}
                        self.lanes.unmark(
                            tx, [r for r in lanes.get(rec.key, ()) if r.key not in kept]
                        )
        return len(chosen)

    def _record_seen(self, tx: Txn, seen: list[_Seen]) -> None:
        for s in seen:
            cur = tx.get(s.key)
            laned = cur is not None and cur.state is JobState.PENDING and LANE in cur.resources
            if cur is None or (cur.state not in RUNNING_STATES and not laned):
                continue
            values = s.values
            if s.state.finished and cur.reason != s.basis:
                # terminate() (or the walltime) marked it after the look: judge it again.
                values = self._final_values(cur) or values
            if values.get("state") in FINAL_STATES:  # with a retry left, it may run again
                values = attempts.settle(self.transport, cur, values)
            tx.update(s.key, **values)

    def _choose(self, tx: Txn) -> list[tuple[JobRecord, tuple[str, ...]]]:
        """The queued jobs to start now, each with the GPUs it gets: eligible (begin time,
        dependencies) and fitting the cores and GPUs the running ones leave."""
        used = tx.cores_in(self.backend.name, self.host, RUNNING_STATES)
        free = self.backend.total_cores - used - self.lanes.waiting_cores(tx)
        if free <= 0:
            return []
        pool = self.backend.gpu_ids
        held = tx.gpus_held(self.backend.name, self.host, RUNNING_STATES) if pool else set()
        free_gpus = [g for g in pool if g not in held]
        now = time.time()
        self._next_begin = None
        needs: dict[str, int] = {}

        def eligible() -> Iterator[tuple[str, int, int]]:
            # Read as planned: once the free cores are taken, the rest of the queue is not
            # (a job ending calls this again), so a long queue costs no more than a short one.
            for q in tx.queue_head(self.backend.name, self.host):
                at = instant_epoch(q.begin) if q.begin else now
                if at > now:  # not before its begin time; look again then
                    self._next_begin = min(at, self._next_begin or at)
                elif not q.has_deps or self._deps_ready(tx, q.key):
                    needs[q.key] = q.gpus
                    yield q.key, q.cores, q.gpus

        keys = plan_starts(eligible(), free, len(free_gpus))
        chosen = []
        for key, gpus in zip(keys, hand_out_gpus([needs[k] for k in keys], free_gpus), strict=True):
            rec = tx.get(key)
            assert rec is not None
            chosen.append((rec, gpus))
        return chosen

    def _record_start(self, tx: Txn, rec: JobRecord, values: dict[str, Any]) -> None:
        """Keep what starting ``rec`` gave, unless its record changed meanwhile to another
        job's (queued records change under the start lock only: merged or resubmitted, then).
        A record rebuilt from the job's directory meanwhile names this very job: kept too."""
        cur = tx.get(rec.key)
        same_job = cur is not None and cur.job_id is not None and cur.job_id == values.get("job_id")
        if cur is None or (cur.state is not JobState.PENDING and not same_job):
            log.warning(
                "job %s (%s) changed while it was started (%s); its record is left as it is: %s",
                rec.name,
                rec.key,
                "removed" if cur is None else cur.state.value,
                values,
            )
            return
        tx.update(rec.key, **values)

    def _cancel_expired(self, tx: Txn, now: float) -> None:
        """Cancel the queued jobs whose deadline passed before they could start."""
        for rec in tx.past_deadline(self.backend.name, self.host, now):
            tx.update(
                rec.key,
                state=JobState.CANCELLED,
                finished=now,
                reason=f"its deadline {rec.resources['deadline']} passed before it "
                "could start; it never ran",
            )

    def _deps_ready(self, tx: Txn, key: str) -> bool:
        rec = tx.get(key)
        assert rec is not None
        return self.dependencies(rec, tx) == []

    def _watch(self, pid: int, job_id: str) -> str:
        """Keep a pidfd of a job just started (its end wakes the monitor); its job id."""
        if hasattr(os, "pidfd_open") and job_id not in self._pidfds:
            try:
                self._pidfds[job_id] = os.pidfd_open(pid)
            except OSError:
                pass
        return job_id

    # -- control ------------------------------------------------------------------------------
    def cancel(self, key: str) -> bool:
        """Cancel a job that has not started. False if it runs or has ended."""
        with self.store.exclusive(START_LOCK), self.store.write() as tx:
            rec = tx.get(key)
            if rec is None or rec.state not in QUEUED or not self._out_of_lane(tx, rec):
                return False
            cancelled(tx, key)
            return True

    def _out_of_lane(self, tx: Txn, rec: JobRecord) -> bool:
        """Take a queued job out of its lane, if it is in one; False if its lane has it."""
        if LANE not in rec.resources:
            return True
        out, _ = self.lanes.take_out([rec])
        self.lanes.unmark(tx, out)
        return bool(out)

    def terminate(self, key: str) -> bool:
        """As :meth:`Driver.terminate`; a job its lane claimed before this client saw it
        start is recorded running in the lane's process first, which is then stopped."""
        if self.cancel(key):
            return True
        with self.store.write() as tx:
            rec = tx.get(key)
            laned = rec is not None and rec.state is JobState.PENDING and LANE in rec.resources
            first = tx.get(first_of(rec.resources[LANE])) if rec is not None and laned else None
            if first is not None and first.job_id:
                tx.update(key, state=JobState.RUNNING, job_id=first.job_id, started=time.time())
        return super().terminate(key)

    def _stop(self, rec: JobRecord) -> bool:
        """SIGTERM to the job's process group."""
        assert rec.job_id
        return self.transport.signal_group(split_job_id(rec.job_id)[0], signal.SIGTERM)

    def suspend(self, key: str) -> bool:
        """Stop a running job's process group (SIGSTOP); :meth:`resume` continues it."""
        return self._signal(key, JobState.RUNNING, signal.SIGSTOP, JobState.SUSPENDED)

    def resume(self, key: str) -> bool:
        return self._signal(key, JobState.SUSPENDED, signal.SIGCONT, JobState.RUNNING)

    def _signal(self, key: str, want: JobState, signum: int, becomes: JobState) -> bool:
        with self.store.write() as tx:
            rec = tx.get(key)
            if rec is None or rec.state is not want or not rec.job_id:
                return False
            if not self.transport.signal_group(split_job_id(rec.job_id)[0], signum):
                return False
            tx.update(key, state=becomes)
            return True

    def hold(self, key: str) -> bool:
        """Keep a queued job from starting until :meth:`release`. False if it has started."""
        with self.store.exclusive(START_LOCK), self.store.write() as tx:
            rec = tx.get(key)
            if rec is None or rec.state not in QUEUED or not self._out_of_lane(tx, rec):
                return False
            if rec.state is JobState.PENDING:
                tx.update(key, state=JobState.HELD)
            return True

    def release(self, key: str) -> bool:
        with self.store.exclusive(START_LOCK), self.store.write() as tx:
            rec = tx.get(key)
            if rec is None or rec.state is not JobState.HELD:
                return False
            tx.update(key, state=JobState.PENDING)
            return True
