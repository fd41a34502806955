"""Lanes: queued local jobs alike run one after another in the process of the first, as a
``map``'s chunk runs its calls, so a stream of short submits pays for a process start-up
and for the client's pass between two jobs once per lane, not once per job.

Starting a local job takes the client a pass of its own (notice the last one ended, record
it, choose, ask the fork server, record the start: several milliseconds) and the job a
process. Where the local queue starts a job that can lead a lane (:func:`laneable`: a Python
job of one task, no GPUs, memory limit, time limit, deadline, begin time, dependency, retry
or ``reuse_slots=False``) while the jobs that ended lately were short (:meth:`Lanes.short`:
their median under :data:`SHORT`; for long jobs a lane saves nothing that matters), it gives
it up to :data:`LANE_MOST` queued jobs alike (the same resources, their own aside), at most
its share of them (those queued divided by the cores), shared among the jobs it starts at
once; they run in its
process after it (:mod:`hpcexec.lanerun`), each with its own record and files (started,
output, result, usage, exit code) and the lane's job id. What they import stays imported
for the next, as in a chunk; ``reuse_slots=False`` keeps a job out of lanes.

The records say it (the ``lane`` resource: the key of the lane's first job):

- a job of a lane that has not started is pending with the lane, and no other start takes it
  (``queue_head`` skips it); the local queue records it running once its started file is
  there, ended where its exit-code file is there first (:meth:`Lanes.look`);
- a lane holds its cores from the start of its first job to the end of its last: between two
  of its jobs (one recorded ended, the next not yet seen started) its cores are counted as
  used (:meth:`Lanes.waiting_cores`), so the cores are never over-committed;
- while lanes run, the ends of their jobs are gathered: the monitor looks every
  :data:`LANE_POLL` seconds rather than at each job's end;
- cancelling or holding a waiting job of a lane takes it out first (both sides claim a job
  by creating its claim file exclusively: it runs in the lane or is taken out, never both);
  the waiting jobs of a lane whose process is gone are taken out and queued again.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

from .lanerun import LANE, claim_name
from .layout import JobLayout
from .localstart import warm_startable
from .record import JobRecord
from .recovery import started_as
from .states import JobState
from .store import Store
from .store_queries import Txn
from .transport.base import Transport

log = logging.getLogger(__name__)

LANE_MOST = 32  # jobs handed to one lane beyond its first
SHORT = 1.0  # seconds: lanes form while the jobs that ended lately took less (the median)
HISTORY = 8  # jobs that ended lately, whose run times decide
LOOK_EVERY = 5.0  # seconds between looks for lanes while this client knows of none
LANE_POLL = 0.02  # seconds between looks while lanes run: their jobs' ends are gathered
QUEUED = "queued to run after job "  # + the first job's key
# a record's own resources, which may differ between the jobs of one lane
OWN = ("name", "index", "index_step", LANE)
NOT_IN_LANES = ("time", "deadline", "begin", "gpus", "gpus_per_task", "retries", "requeue", "mem")


def first_of(lane: str) -> str:
    """The key of the first job of ``lane``."""
    return lane.rsplit("-", 1)[0]


def laneable(rec: JobRecord) -> bool:
    """Whether the job may go in a lane (see the module's docstring)."""
    res = rec.resources
    return (
        warm_startable(rec)
        and not rec.deps
        and res.get("reuse_slots", True) is not False
        and not any(res.get(k) for k in NOT_IN_LANES)
    )


def _alike(rec: JobRecord) -> str:
    return json.dumps({k: v for k, v in rec.resources.items() if k not in OWN}, sort_keys=True)


class Lanes:
    """The lanes of one local queue's host: forming them, following them, taking jobs out."""

    def __init__(
        self, store: Store, transport: Transport, backend: str, host: str, cores: int
    ) -> None:
        self.cores = cores  # of the host: a lane takes at most its share of the queue
        self.store = store
        self.transport = transport
        self.backend = backend
        self.host = host
        self.active = False  # a job waits in a lane (as the last look found)
        self._lately: deque[float] = deque(maxlen=HISTORY)  # run times of jobs that ended
        self._unstarted: set[str] = set()  # lanes whose first job was seen not started
        self._looked = -LOOK_EVERY  # time.monotonic() of the last look
        self._formed = False  # a lane was formed since the last look

    def form(self, tx: Txn, leads: list[JobRecord]) -> dict[str, list[JobRecord]]:
        """The queued jobs each of ``leads`` (being started) takes in its lane, marked so in
        ``tx``; alike jobs are shared among the leads in turn."""
        open_ = {r.key: r for r in leads if laneable(r)}
        if not open_ or not self.short():
            return {}
        taken: dict[str, list[JobRecord]] = {k: [] for k in open_}
        kinds: dict[str, list[str]] = defaultdict(list)
        for key, lead in open_.items():
            kinds[_alike(lead)].append(key)
        candidates = self._candidates(tx, open_, kinds, LANE_MOST * self.cores)
        # at most its share of the queue: the cores that free up later find jobs queued
        most = min(LANE_MOST, -(-len(candidates) // self.cores))
        for rec in candidates:
            keys = [k for k in kinds[_alike(rec)] if len(taken[k]) < most]
            if keys:  # the lane of that kind with the fewest jobs
                taken[min(keys, key=lambda k: len(taken[k]))].append(rec)
        for key, recs in taken.items():
            if recs:  # a new name each time: a job taken out of one lane may join another
                self._mark(tx, [open_[key], *recs], f"{key}-{uuid.uuid4().hex[:8]}")
                self._formed = True
        return {k: v for k, v in taken.items() if v}

    def ended(self, seconds: list[float]) -> None:
        """Jobs of this host ran these many seconds each (their starts to their ends seen)."""
        self._lately.extend(seconds)

    def short(self) -> bool:
        """Whether the jobs that ended lately were short (median under :data:`SHORT`): what a
        lane saves is a few milliseconds per job, and a long job's lane would hold back the
        jobs waiting in it while cores that free up meanwhile find nothing queued."""
        if not self._lately:
            return False
        ordered = sorted(self._lately)
        return ordered[len(ordered) // 2] < SHORT

    def _candidates(
        self, tx: Txn, leads: dict[str, JobRecord], kinds: dict[str, list[str]], most: int
    ) -> list[JobRecord]:
        """Up to ``most`` queued jobs, in queue order, that may join a lane of ``kinds``."""
        found: list[JobRecord] = []
        for q in tx.queue_head(self.backend, self.host, most + len(leads)):
            if q.key in leads or q.has_deps or q.begin or q.gpus:
                continue
            rec = tx.get(q.key)
            if rec is not None and laneable(rec) and _alike(rec) in kinds:
                found.append(rec)
                if len(found) >= most:
                    break
        return found

    def unstarted(self, tx: Txn) -> None:
        """Queue again the jobs of the lanes :meth:`look` found with a first job not started:
        a client died between forming the lane and starting it (called under the start
        lock, so no client is starting one now). Each is taken out first, in case its lane
        did start."""
        if not self._unstarted:
            return
        suspects, self._unstarted = self._unstarted, set()
        lanes: dict[str, list[JobRecord]] = defaultdict(list)
        for rec in tx.in_lanes(self.backend, self.host):
            if rec.resources[LANE] in suspects:
                lanes[rec.resources[LANE]].append(rec)
        for lane, recs in lanes.items():
            first = tx.get(first_of(lane))
            if first is None or first.state is JobState.PENDING:
                self.unmark(tx, self.take_out(recs)[0])

    def _mark(self, tx: Txn, recs: list[JobRecord], lane: str) -> None:
        for i, rec in enumerate(recs):
            resources = {**rec.resources, LANE: lane}
            rec.resources = resources
            reason = {} if i == 0 else {"reason": QUEUED + first_of(lane)}
            tx.update(rec.key, resources=resources, **reason)

    def unmark(self, tx: Txn, recs: list[JobRecord]) -> None:
        """These jobs are in no lane (not handed over, or taken out): back to the queue."""
        for rec in recs:
            cur = tx.get(rec.key)
            if cur is not None and LANE in cur.resources:
                resources = {k: v for k, v in cur.resources.items() if k != LANE}
                reason = None if (cur.reason or "").startswith(QUEUED) else cur.reason
                tx.update(rec.key, resources=resources, reason=reason)

    def waiting_cores(self, tx: Txn) -> int:
        """The cores of the lanes between two jobs: a job waits in them and none runs."""
        return tx.lane_cores_waiting(self.backend, self.host)

    def due(self) -> bool:
        """Whether :meth:`look` is due: lanes ran at the last look or were formed since, or
        :data:`LOOK_EVERY` passed (another client's, or a dead client's). A queue of many
        pending jobs is not read for lanes at every poll when there are none."""
        return self.active or self._formed or time.monotonic() - self._looked >= LOOK_EVERY

    def look(
        self,
        final: Callable[[JobRecord], dict[str, Any] | None],
        alive: Callable[[str], bool],
    ) -> tuple[list[tuple[str, dict[str, Any]]], list[JobRecord]]:
        """What became of the waiting jobs of each lane, in its order until the first that
        has not started: (key, new fields) for those that started (running, with the lane's
        job id) or ended (``final``: their fields from the exit-code file); and the jobs
        of lanes whose process is gone (``alive`` of its job id False), taken out of them."""
        found: list[tuple[str, dict[str, Any]]] = []
        lanes: dict[str, list[JobRecord]] = defaultdict(list)
        for rec in self.store.in_lanes(self.backend, self.host):
            lanes[rec.resources[LANE]].append(rec)
        self.active = bool(lanes)
        self._looked, self._formed = time.monotonic(), False
        now = time.time()
        orphans: list[JobRecord] = []
        for lane, recs in lanes.items():
            waiting = self._follow(recs, final, now, found)
            first = self.store.get(first_of(lane))
            if first is None or first.state is JobState.PENDING:
                self._unstarted.add(lane)  # or being started: looked at under the lock
            elif waiting and first.job_id and not alive(first.job_id):
                orphans += self.take_out(waiting)[0]
        return found, orphans

    def _follow(
        self, recs: list[JobRecord], final: Callable, now: float, found: list
    ) -> list[JobRecord]:
        """Note in ``found`` the jobs of one lane that started or ended; those still waiting."""
        for i, rec in enumerate(recs):
            job_id = started_as(self.transport, rec.jobdir)
            if job_id:
                values = dict(state=JobState.RUNNING, job_id=job_id, started=now, reason=None)
                found.append((rec.key, values))
            elif self.transport.exists(JobLayout.of(rec.jobdir, rec.resources).exitcode):
                found.append((rec.key, {**(final(rec) or {}), "started": now}))
            else:
                return recs[i:]
        return []

    def take_out(self, recs: list[JobRecord]) -> tuple[list[JobRecord], list[JobRecord]]:
        """Take these waiting jobs out of their lanes (:func:`hpcexec.lanerun.claim_name`): those
        now in no lane, and those their lane has claimed (started, or about to)."""
        out: list[JobRecord] = []
        running: list[JobRecord] = []
        for rec in recs:
            claim = os.path.join(rec.jobdir, claim_name(rec.resources[LANE]))
            taken = self.transport.create_exclusive(claim)
            (out if taken else running).append(rec)
        return out, running
