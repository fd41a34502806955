"""Packs joblib's batches into hpcexec jobs: probe, sizing from measured run time, abort."""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import hpcexec

log = logging.getLogger(__name__)

LINGER = 0.01  # seconds to let a burst of batches from joblib gather before packing
TICK = 0.02  # how often the pool looks again while it waits for a probe
STARTUP_AMORTISE = 4.0  # a job carries at least this many times its start-up in work
STARTUP_ALLOWANCE = 2.0  # seconds of a running probe taken as its job's start-up
MAX_TASKS_PER_JOB = 100_000
MAX_PULLS = 1000  # batches asked of joblib at once


class JobRun(Protocol):
    """What a job of batches returns (``JobReport``): its start-up and each batch's time
    and results."""

    startup: float
    batches: list[tuple[float, list]]


@dataclass
class Outcome:
    """What joblib's callback gets back for one batch."""

    value: Any = None
    error: BaseException | None = None


@dataclass
class Batch:
    call: Any  # joblib's BatchedCalls
    callback: Callable[[Outcome], None]
    size: int
    generation: int


def _job_name(batch: Batch) -> str:
    try:
        fn = batch.call.items[0][0]
    except (AttributeError, IndexError, TypeError):
        fn = None
    fn = getattr(fn, "function", fn)  # scikit-learn wraps calls in _FuncWrapper
    name = getattr(fn, "__name__", None) or "batch"
    return "joblib-" + (re.sub(r"[^\w.+-]+", "_", name).strip("_") or "batch")[:50]


class JobPool:
    """Packs joblib's batches into jobs, at most ``slots`` jobs in flight, on one thread.

    Until a batch of the current call has run, nothing is known of how long a task takes:
    the first batch goes alone as a probe. Its measured time then sizes the jobs (about
    ``target`` seconds of work each). A probe still running ``target`` seconds after its
    start-up already tells that one batch is enough per job; one that waits in the queue
    longer than ``patience`` seconds lets the rest go, spread evenly over the free slots.

    Each job runs ``job_fn(calls)`` with its batches' calls, which returns a :class:`JobRun`.
    With ``workers`` set, each such group is a task of that worker pool instead of a job.
    """

    def __init__(
        self,
        executor: hpcexec.Executor,
        job_fn: Callable[[list[Any]], JobRun],
        *,
        cache: bool,
        patience: float,
    ) -> None:
        self.executor = executor
        self.job_fn = job_fn
        self.cache = cache
        self.patience = patience
        self.slots = 1
        self.target = 1.0
        self.refill: Callable[[], bool] | None = None  # asks joblib for one more batch
        self.workers: hpcexec.WorkerPool | None = None  # where batches go instead of jobs
        self._cond = threading.Condition(threading.RLock())
        self._pending: deque[Batch] = deque()
        self._running: dict[Any, list[Batch]] = {}  # JobFuture -> its batches
        self._finished: deque[Any] = deque()
        self._generation = 0
        self._last_add = 0.0
        self._startup: float | None = None  # a job's start-up, measured (kept across calls)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._reset_estimate()

    def _reset_estimate(self) -> None:
        self._task_seconds = 0.0  # measured in jobs of this call
        self._task_count = 0
        self._probe: Any = None
        self._probe_sent = 0.0
        self._probe_running_since: float | None = None

    # -- called by the backend (joblib's threads) ---------------------------------------
    def start_call(self, slots: int, target: float) -> None:
        """Begin a ``Parallel`` call: nothing is known of its tasks yet."""
        with self._cond:
            self.slots, self.target = max(1, slots), target
            self._reset_estimate()
            self._stopping = False
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="hpcexec-joblib", daemon=True
                )
                self._thread.start()

    def add(self, batch: Any, callback: Callable[[Outcome], None]) -> Batch:
        with self._cond:
            item = Batch(batch, callback, len(batch), self._generation)
            self._pending.append(item)
            self._last_add = time.monotonic()
            self._cond.notify()
        return item

    def abort(self) -> None:
        """Drop the batches not sent yet and end the jobs in flight (cancel those still
        queued, terminate those running). Their callbacks are not called: joblib is
        aborting the call and waits for none of them."""
        with self._cond:
            self._generation += 1
            self._pending.clear()
            running = list(self._running)
            self._reset_estimate()
        for f in running:
            try:
                if not f.cancel():
                    f.terminate()
            except Exception:  # a scheduler refusing scancel must not hide joblib's error
                log.warning("could not end job %s while aborting", f.key, exc_info=True)

    def stop(self) -> None:
        """Let the thread end once nothing is pending or in flight."""
        with self._cond:
            self._stopping = True
            self._cond.notify()

    # -- the pool's thread ----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping and not self._pending and not self._running:
                    self._thread = None
                    return
                if not self._finished:
                    busy = self._pending or self._running
                    self._cond.wait(TICK if busy else None)
                done = []
                while self._finished:
                    f = self._finished.popleft()
                    batches = self._running.pop(f, None)
                    if batches is not None:
                        done.append((f, batches))
            try:
                for f, batches in done:
                    self._deliver(f, batches)  # joblib dispatches more batches from here
                self._refill()
                for group, probe in self._take_groups():
                    self._submit(group, probe)
            except Exception as e:  # a bug here must fail the call, never leave it waiting
                log.exception("the joblib job pool failed; failing the batches not sent")
                with self._cond:
                    pending, self._pending = list(self._pending), deque()
                for b in pending:
                    if b.generation == self._generation:
                        b.callback(Outcome(error=e))

    def _on_done(self, future: Any) -> None:
        with self._cond:
            self._finished.append(future)
            self._cond.notify()

    def _deliver(self, future: Any, batches: list[Batch]) -> None:
        try:
            report = future.result()
            per_batch = report.batches
            if len(per_batch) != len(batches):
                raise RuntimeError(
                    f"job {future.key} returned {len(per_batch)} batch results "
                    f"for {len(batches)} batches"
                )
        except BaseException as e:  # the job's own exception, or JobFailed, or cancelled  # noqa: BLE001
            outcomes = [Outcome(error=e)] * len(batches)
        else:
            with self._cond:
                if batches[0].generation == self._generation:
                    self._task_seconds += sum(s for s, _ in per_batch)
                    self._task_count += sum(b.size for b in batches)
                self._startup = (
                    report.startup
                    if self._startup is None
                    else (self._startup + report.startup) / 2
                )
            outcomes = [Outcome(value=r) for _, r in per_batch]
        with self._cond:
            if future is self._probe:
                self._probe = None
        for batch, outcome in zip(batches, outcomes, strict=True):
            if batch.generation != self._generation:
                continue  # aborted: joblib waits for none of these
            try:
                batch.callback(outcome)
            except Exception:
                log.exception("joblib's completion callback failed")

    def job_seconds(self) -> float:
        """Seconds of work a job should carry: the target, or enough that the job's
        measured start-up is at most a fifth of its time."""
        with self._cond:
            return max(self.target, STARTUP_AMORTISE * (self._startup or 0.0))

    def tasks_for(self, per_task: float) -> int:
        """How many tasks of ``per_task`` seconds fill a job (:meth:`job_seconds`)."""
        return max(1, min(MAX_TASKS_PER_JOB, int(self.job_seconds() / per_task)))

    def measured_task_seconds(self) -> float | None:
        """Seconds one task of this call took on average inside the jobs, once one ran."""
        with self._cond:
            return max(self._task_seconds / self._task_count, 1e-6) if self._task_count else None

    def _task_estimate(self, now: float) -> float | None:
        """Seconds one task takes, measured, or a lower bound from a probe still running."""
        measured = self.measured_task_seconds()
        if measured is not None:
            return measured
        probe = self._probe
        if probe is None or not probe.running():
            return None
        if self._probe_running_since is None:
            self._probe_running_since = now
        ran = now - self._probe_running_since - STARTUP_ALLOWANCE  # interpreter, imports
        if ran < self.target:
            return None
        return ran / max(1, sum(b.size for b in self._running.get(probe, ())))

    def _tasks_per_job(self, now: float, free: int) -> int | None:
        """How many tasks the next jobs should carry; None while a probe must come first
        or is still out (under the lock)."""
        per_task = self._task_estimate(now)
        if per_task is not None:
            return self.tasks_for(per_task)
        if (
            self._probe is not None
            and not self._probe.running()
            and now - self._probe_sent > self.patience
        ):
            return math.ceil(sum(b.size for b in self._pending) / free)
        return None

    def _refill(self) -> None:
        """Ask joblib for more batches while the free slots could take more work than is
        pending: joblib itself sends one batch per finished batch, which would make many
        rounds of short jobs out of the tail of a call."""
        refill = self.refill
        pulled = 0
        while refill is not None and pulled < MAX_PULLS:
            with self._cond:
                free = self.slots - len(self._running)
                per_job = self._tasks_per_job(time.monotonic(), free) if self._task_count else None
                have = sum(b.size for b in self._pending)
                if free <= 0 or not per_job or have >= per_job * free:
                    return
            if not refill():
                return
            with self._cond:
                if sum(b.size for b in self._pending) == have:
                    return  # joblib had nothing more to give
            pulled += 1

    def _take_groups(self) -> list[tuple[list[Batch], bool]]:
        """The batches to send now, grouped into jobs."""
        with self._cond:
            now = time.monotonic()
            free = self.slots - len(self._running)
            if not self._pending or free <= 0 or now - self._last_add < LINGER:
                return []
            per_job = self._tasks_per_job(now, free)
            if per_job is None:
                if self._probe is None:
                    return [([self._pending.popleft()], True)]
                return []
            per_job = self._spread(per_job, free, now)
            groups: list[tuple[list[Batch], bool]] = []
            while self._pending and len(groups) < free:
                group = [self._pending.popleft()]
                tasks = group[0].size
                while self._pending and tasks + self._pending[0].size <= per_job:
                    tasks += self._pending[0].size
                    group.append(self._pending.popleft())
                groups.append((group, False))
            return groups

    def _spread(self, per_job: int, free: int, now: float) -> int:
        """Tasks per job for the pending tail of a call: when less is pending than the free
        slots would take, spread it evenly over them (each job still carrying the target's
        worth), so that no slot idles while one job runs the rest (under the lock)."""
        pending = sum(b.size for b in self._pending)
        if pending >= per_job * free:
            return per_job
        per_task = self._task_estimate(now)
        floor = max(1, int(self.target / per_task)) if per_task else 1
        return min(per_job, max(floor, math.ceil(pending / free)))

    def _submit(self, group: list[Batch], probe: bool) -> None:
        options: dict[str, Any] = {}
        if self.executor.resources.name is None:
            options["name"] = _job_name(group[0])
        if not self.cache:  # every batch runs, as joblib users expect (random draws, side effects)
            options["key"] = f"joblib-{uuid.uuid4().hex}"
        try:
            if self.workers is not None:
                future: Any = self.workers.submit(self.job_fn, [b.call for b in group])
            else:
                view = self.executor.options(**options) if options else self.executor
                future = view.submit(self.job_fn, [b.call for b in group])
        except BaseException as e:  # an argument that cannot be pickled, a full disk, ...  # noqa: BLE001
            for b in group:
                if b.generation == self._generation:
                    b.callback(Outcome(error=e))
            return
        with self._cond:
            aborted = group[0].generation != self._generation
            if not aborted:
                self._running[future] = group
                if probe:
                    self._probe, self._probe_sent = future, time.monotonic()
                    self._probe_running_since = None
        if aborted:  # joblib aborted the call while this job was submitted: abort() missed it
            if not future.cancel():
                future.terminate()
            return
        log.debug(
            "job %s carries %d batch(es), %d task(s)%s",
            future.key,
            len(group),
            sum(b.size for b in group),
            " (probe)" if probe else "",
        )
        future.add_done_callback(self._on_done)
