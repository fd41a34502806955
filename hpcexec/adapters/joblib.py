"""A joblib parallel backend whose batches run as hpcexec jobs.

Importing this module registers the backend under the name ``"hpcexec"``::

    import hpcexec.adapters.joblib
    from joblib import Parallel, delayed, parallel_config

    ex = hpcexec.Executor(backend="slurm", time="00:20:00")
    with parallel_config(backend="hpcexec", n_jobs=64, executor=ex):
        GridSearchCV(model, grid, cv=5).fit(X, y)   # scikit-learn's joblib calls become jobs

A job carries several of joblib's batches when they are short: the first batch of each
``Parallel`` call runs alone as a probe, its measured run time sizes the jobs that follow
(``batch_seconds`` of work each), so job start-up is paid rarely.
"""
from __future__ import annotations

import inspect
import logging
import math
import os
import re
import threading
import time
import uuid
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

try:
    import joblib
    from joblib.parallel import (FallbackToBackend, ParallelBackendBase, SequentialBackend,
                                 ThreadingBackend, cpu_count, register_parallel_backend)
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("hpcexec.adapters.joblib needs joblib >= 1.5: "
                      "pip install 'hpcexec[joblib]'") from e

import hpcexec
from hpcexec.errors import ResourceError
from hpcexec.script import current_job

log = logging.getLogger(__name__)

NAME = "hpcexec"
DEFAULT_MAX_JOBS = 64  # jobs in flight for n_jobs=-1 on a scheduler
LOCAL_BATCH_SECONDS = 0.5
SCHEDULER_BATCH_SECONDS = 5.0
LINGER = 0.01  # seconds to let a burst of batches from joblib gather before packing
TICK = 0.02  # how often the pool looks again while it waits for a probe
STARTUP_AMORTISE = 4.0  # a job carries at least this many times its start-up in work
STARTUP_ALLOWANCE = 2.0  # seconds of a running probe taken as its job's start-up
MAX_TASKS_PER_JOB = 100_000
MAX_PULLS = 1000  # batches asked of joblib at once
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def _executor_args() -> set[str]:
    """The keyword arguments that configure a new Executor (not resources or job options)."""
    params = inspect.signature(hpcexec.Executor.__init__).parameters
    return {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}


def _check_joblib_version() -> None:
    parts = re.findall(r"\d+", joblib.__version__)[:2]
    if tuple(int(p) for p in parts) < (1, 5):
        raise ImportError(f"hpcexec.adapters.joblib needs joblib >= 1.5, found "
                          f"{joblib.__version__}: pip install -U 'joblib>=1.5'")


_check_joblib_version()


@dataclass
class JobReport:
    """What a job of batches returns: its start-up cost and each batch's time and results."""

    startup: float  # seconds from the job's start to its first batch (interpreter, imports)
    batches: list[tuple[float, list]]  # (seconds, results) per batch


def _process_age() -> float:
    """Seconds since this process started (from /proc on Linux; else its CPU time)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start, in ticks
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.process_time()


def run_batches(batches: list[Callable[[], list]]) -> JobReport:
    """In the job: run joblib batches in order. An exception ends the job; hpcexec raises
    it again in the client with its own type."""
    report = JobReport(_process_age(), [])
    for batch in batches:
        start = time.perf_counter()
        results = batch()
        report.batches.append((time.perf_counter() - start, results))
    return report


def local_slots(executor: hpcexec.Executor) -> int | None:
    """How many jobs of this executor's size run at once on the local backend, or None
    on a scheduler. Read from :meth:`Executor.default_chunksize`, which makes one chunk
    per slot locally and one call per element on schedulers."""
    probe = 1 << 20
    chunk = executor.default_chunksize(probe)
    return None if chunk == 1 else math.ceil(probe / chunk)


@dataclass
class _Outcome:
    """What joblib's callback gets back for one batch."""

    value: Any = None
    error: BaseException | None = None


@dataclass
class _Batch:
    call: Any  # joblib's BatchedCalls
    callback: Callable[[_Outcome], None]
    size: int
    generation: int


def _job_name(batch: _Batch) -> str:
    try:
        fn = batch.call.items[0][0]
    except (AttributeError, IndexError, TypeError):
        fn = None
    fn = getattr(fn, "function", fn)  # scikit-learn wraps calls in _FuncWrapper
    name = getattr(fn, "__name__", None) or "batch"
    return "joblib-" + (re.sub(r"[^\w.+-]+", "_", name).strip("_") or "batch")[:50]


class _JobPool:
    """Packs joblib's batches into jobs, at most ``slots`` jobs in flight, on one thread.

    Until a batch of the current call has run, nothing is known of how long a task takes:
    the first batch goes alone as a probe. Its measured time then sizes the jobs (about
    ``target`` seconds of work each). A probe still running ``target`` seconds after its
    start-up already tells that one batch is enough per job; one that waits in the queue
    longer than ``patience`` seconds lets the rest go, spread evenly over the free slots.
    """

    def __init__(self, executor: hpcexec.Executor, *, cache: bool, patience: float) -> None:
        self.executor = executor
        self.cache = cache
        self.patience = patience
        self.slots = 1
        self.target = 1.0
        self.refill: Callable[[], bool] | None = None  # asks joblib for one more batch
        self._cond = threading.Condition(threading.RLock())
        self._pending: deque[_Batch] = deque()
        self._running: dict[Any, list[_Batch]] = {}  # JobFuture -> its batches
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
                self._thread = threading.Thread(target=self._run, name="hpcexec-joblib",
                                                daemon=True)
                self._thread.start()

    def add(self, batch: Any, callback: Callable[[_Outcome], None]) -> _Batch:
        with self._cond:
            item = _Batch(batch, callback, len(batch), self._generation)
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
                        b.callback(_Outcome(error=e))

    def _on_done(self, future: Any) -> None:
        with self._cond:
            self._finished.append(future)
            self._cond.notify()

    def _deliver(self, future: Any, batches: list[_Batch]) -> None:
        try:
            report = future.result()
            per_batch = report.batches
            if len(per_batch) != len(batches):
                raise RuntimeError(f"job {future.key} returned {len(per_batch)} batch results "
                                   f"for {len(batches)} batches")
        except BaseException as e:  # the job's own exception, or JobFailed, or cancelled
            outcomes = [_Outcome(error=e)] * len(batches)
        else:
            with self._cond:
                if batches[0].generation == self._generation:
                    self._task_seconds += sum(s for s, _ in per_batch)
                    self._task_count += sum(b.size for b in batches)
                self._startup = report.startup if self._startup is None else \
                    (self._startup + report.startup) / 2
            outcomes = [_Outcome(value=r) for _, r in per_batch]
        with self._cond:
            if future is self._probe:
                self._probe = None
        for batch, outcome in zip(batches, outcomes):
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
            return max(1, min(MAX_TASKS_PER_JOB, int(self.job_seconds() / per_task)))
        if self._probe is not None and not self._probe.running() and \
                now - self._probe_sent > self.patience:
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

    def _take_groups(self) -> list[tuple[list[_Batch], bool]]:
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
            groups = []
            while self._pending and len(groups) < free:
                group = [self._pending.popleft()]
                tasks = group[0].size
                while self._pending and tasks + self._pending[0].size <= per_job:
                    tasks += self._pending[0].size
                    group.append(self._pending.popleft())
                groups.append((group, False))
            return groups

    def _submit(self, group: list[_Batch], probe: bool) -> None:
        options: dict[str, Any] = {}
        if self.executor.resources.name is None:
            options["name"] = _job_name(group[0])
        if not self.cache:  # every batch runs, as joblib users expect (random draws, side effects)
            options["key"] = f"joblib-{uuid.uuid4().hex}"
        try:
            view = self.executor.options(**options) if options else self.executor
            future = view.submit(run_batches, [b.call for b in group])
        except BaseException as e:  # an argument that cannot be pickled, a full disk, ...
            for b in group:
                if b.generation == self._generation:
                    b.callback(_Outcome(error=e))
            return
        with self._cond:
            self._running[future] = group
            if probe:
                self._probe, self._probe_sent = future, time.monotonic()
                self._probe_running_since = None
        log.debug("job %s carries %d batch(es), %d task(s)%s", future.key, len(group),
                  sum(b.size for b in group), " (probe)" if probe else "")
        future.add_done_callback(self._on_done)


class _JobThreads(ThreadingBackend):
    """Threads inside a job, never more than the CPUs the job may use (joblib's count: the
    process's CPU affinity and cgroup quota, which schedulers set to the allocation)."""

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        return min(super().effective_n_jobs(n_jobs), cpu_count())


def inside_job_backend(nesting_level: int | None) -> ParallelBackendBase:
    """What a ``Parallel`` call naming this backend runs on inside a job, as joblib nests its
    own backends: threads (up to the job's CPUs) at the first level, sequential below."""
    level = nesting_level or 0
    if level > 1:
        return SequentialBackend(nesting_level=level)
    return _JobThreads(nesting_level=level)


class HpcexecBackend(ParallelBackendBase):
    """joblib backend that runs batches of tasks as hpcexec jobs.

    Args:
        executor: the :class:`hpcexec.Executor` to submit through. Without it, one is made
            from the Executor's own keyword arguments given here (``scheduler=`` stands for
            the Executor's ``backend=``, whose name ``parallel_config`` already uses).
        batch_seconds: seconds of work a job should carry (default 0.5 on the local
            backend, 5 on schedulers): short tasks are packed into one job until their
            measured run time reaches it.
        max_jobs: jobs in flight for ``n_jobs=-1`` on a scheduler (default 64). On the local
            backend ``n_jobs=-1`` means every slot: cores // cores per job.
        cache: reuse the results of identical batches from the cache (default False: every
            batch runs, as joblib users expect of random draws and side effects).
        probe_patience: seconds a probe job may wait in the queue before the other batches
            are sent without knowing how long a task takes.
        **resources: resources and job options for the jobs (``time=``, ``mem=``, ...).

    ``n_jobs`` is the most jobs in flight at once; ``n_jobs=1`` runs in this process, as
    joblib does for every backend. Nested ``Parallel`` calls inside a job use threads
    (as many as the job's cores) or run sequentially in a one-core job; so does a call that
    names this backend inside a job (``HPCEXEC_JOB_ID`` is set): it submits no jobs of its
    own, which could wait forever for the cores its own job holds.
    """

    supports_retrieve_callback = True
    supports_inner_max_num_threads = True
    supports_sharedmem = False
    uses_threads = False
    default_n_jobs = -1

    def __init__(self, executor: hpcexec.Executor | None = None, *, scheduler: str | None = None,
                 batch_seconds: float | None = None, max_jobs: int = DEFAULT_MAX_JOBS,
                 cache: bool = False, probe_patience: float = 30.0,
                 nesting_level: int | None = None, inner_max_num_threads: int | None = None,
                 **resources: Any) -> None:
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads)
        for knob, value in (("batch_seconds", batch_seconds), ("probe_patience", probe_patience)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or value <= 0):
                raise ResourceError(f"{knob} takes a positive number of seconds, not {value!r}")
        if isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or max_jobs < 1:
            raise ResourceError(f"max_jobs takes a whole number >= 1, not {max_jobs!r}")
        if "backend" in resources:  # direct construction may use the Executor's own name
            scheduler = scheduler or resources.pop("backend")
        self.in_job = current_job() is not None  # then calls run here: see configure
        if executor is None and self.in_job:
            pass  # no Executor (nor its cache, nor an SSH connection) for jobs never submitted
        elif executor is None:
            executor = hpcexec.Executor(scheduler, **resources)  # None: the profile's, or local
            self._finalizer = weakref.finalize(self, executor.shutdown, wait=False)
        else:
            wrong = [k for k in resources if k in _executor_args()] + (["scheduler"] if scheduler
                                                                       else [])
            if wrong:
                raise ResourceError(
                    f"{', '.join(wrong)} configure a new Executor; with executor= given, pass "
                    "only resources and job options (or build the Executor with them)")
            if resources:
                executor = executor.options(**resources)
        self.executor: hpcexec.Executor | None = executor  # None only inside a job
        self.batch_seconds = batch_seconds
        self.max_jobs = max_jobs
        self._slots = local_slots(executor) if executor is not None else None
        self._pool = _JobPool(executor, cache=cache, patience=probe_patience) \
            if executor is not None else None
        self.parallel = None
        self._n_jobs = 1

    @property
    def _jobs(self) -> _JobPool:
        if self._pool is None:
            raise RuntimeError("inside a job, Parallel calls on the hpcexec backend run in the "
                               "job (configure falls back to threads); no jobs are submitted")
        return self._pool

    # -- sizing -----------------------------------------------------------------------
    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """``n_jobs`` itself when positive; negative counts back from every slot (local)
        or from ``max_jobs`` (schedulers), as joblib counts back from the CPUs."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if self.in_job:
            return inside_job_backend(self.nesting_level).effective_n_jobs(n_jobs)
        if n_jobs is None:
            n_jobs = self.default_n_jobs
        if n_jobs < 0:
            capacity = self._slots if self._slots is not None else self.max_jobs
            return max(capacity + 1 + n_jobs, 1)
        return n_jobs

    @property
    def target_seconds(self) -> float:
        if self.batch_seconds is not None:
            return float(self.batch_seconds)
        return LOCAL_BATCH_SECONDS if self._slots is not None else SCHEDULER_BATCH_SECONDS

    def compute_batch_size(self) -> int:
        """Tasks per joblib batch: enough for ``batch_seconds`` once a task was timed."""
        per_task = self._jobs.measured_task_seconds()
        if per_task is None:
            return 1
        return max(1, min(MAX_TASKS_PER_JOB, int(self._jobs.job_seconds() / per_task)))

    def batch_completed(self, batch_size: int, duration: float) -> None:
        """Ignored: the time from dispatch to completion is mostly queue wait and job
        start-up here; batches are sized from the run time measured inside the jobs."""

    # -- a call ----------------------------------------------------------------------------
    def configure(self, n_jobs: int = 1, parallel: Any = None, prefer: str | None = None,
                  require: str | None = None, **backend_kwargs: Any) -> int:
        if self.in_job:
            log.debug("inside job %s: this Parallel call runs in the job", current_job())
            raise FallbackToBackend(inside_job_backend(self.nesting_level))
        self.parallel = parallel
        self._n_jobs = self.effective_n_jobs(n_jobs)
        return self._n_jobs

    def start_call(self) -> None:
        pool = self._jobs
        assert self.executor is not None  # there is a pool
        pool.refill = self._pull_batch
        pool.start_call(self._n_jobs, self.target_seconds)
        if self.inner_max_num_threads is not None:
            env = {**self.executor.resources.env_dict,
                   **{v: str(self.inner_max_num_threads) for v in THREAD_VARS}}
            pool.executor = self.executor.options(env=env)
        else:
            pool.executor = self.executor

    def stop_call(self) -> None:
        if self._pool is not None:
            self._pool.refill = None

    def _pull_batch(self) -> bool:
        """Have joblib dispatch one more batch of this call, as its own completion
        callbacks do; False when the call has nothing left to dispatch."""
        p = self.parallel
        if p is None or getattr(p, "_aborting", True) or \
                getattr(p, "_original_iterator", None) is None:
            return False
        p.dispatch_next()
        return True

    def submit(self, func: Any, callback: Callable[[_Outcome], None] | None = None) -> _Batch:
        return self._jobs.add(func, callback or (lambda outcome: None))

    def retrieve_result_callback(self, out: _Outcome) -> Any:
        if out.error is not None:
            raise out.error
        return out.value

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Cancel the jobs of this call that have not started and terminate those running."""
        if self._pool is not None:
            self._pool.abort()

    def terminate(self) -> None:
        if self._pool is not None:
            self._pool.stop()

    def get_nested_backend(self) -> tuple[ParallelBackendBase, int | None]:
        """Inside a job: threads, as many as the job's cores; sequential in a one-core job."""
        level = (self.nesting_level or 0) + 1
        cores = self.executor.resources.cores if self.executor is not None else cpu_count()
        if cores > 1:
            return ThreadingBackend(nesting_level=level), cores
        return SequentialBackend(nesting_level=level), None


def register() -> None:
    """Register the backend under the name ``"hpcexec"`` (done on import)."""
    register_parallel_backend(NAME, HpcexecBackend)


register()

__all__ = ["HpcexecBackend", "JobReport", "register", "run_batches", "NAME"]
