"""A joblib parallel backend whose batches run as hpcexec jobs.

Importing this module registers the backend under the name ``"hpcexec"``::

    import hpcexec.adapters.joblib
    from joblib import Parallel, delayed, parallel_config

    ex = hpcexec.Executor(backend="slurm", time="00:20:00")
    with parallel_config(backend="hpcexec", n_jobs=64, executor=ex):
        GridSearchCV(model, grid, cv=5).fit(X, y)   # scikit-learn's joblib calls become jobs

A job carries several of joblib's batches when they are short: the first batch of each
``Parallel`` call runs alone as a probe, its measured run time sizes the jobs that follow
(``batch_seconds`` of work each), so job start-up is paid rarely. On a scheduler the groups
of batches go to a pool of worker jobs (:meth:`hpcexec.Executor.workers`), kept for the
calls that follow until they idle ``worker_idle`` seconds: a call pays for a job's start-up
and its imports once per worker, not once per group.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

try:
    import joblib
    from joblib.parallel import (
        FallbackToBackend,
        ParallelBackendBase,
        cpu_count,
        register_parallel_backend,
    )
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "hpcexec.adapters.joblib needs joblib >= 1.5: pip install 'hpcexec[joblib]'"
    ) from e

import hpcexec
from hpcexec.adapters.joblib_nested import inside_job_backend, nested_backend
from hpcexec.adapters.joblib_pool import Batch, JobPool, Outcome
from hpcexec.errors import ResourceError
from hpcexec.script import current_job
from hpcexec.settings import NAMES as SETTINGS

log = logging.getLogger(__name__)

#: the keyword arguments that configure a new Executor (not resources or job options)
EXECUTOR_ARGS = frozenset({*SETTINGS, "profile"})

NAME = "hpcexec"
DEFAULT_MAX_JOBS = 64  # jobs in flight for n_jobs=-1 on a scheduler
LOCAL_BATCH_SECONDS = 0.5
SCHEDULER_BATCH_SECONDS = 5.0  # a group of batches as a job of its own
WORKER_BATCH_SECONDS = 0.5  # as a task of a worker job
WORKER = "HPCEXEC_WORKER"  # set in a worker job (see hpcexec.workerloop)
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def _check_joblib_version() -> None:
    parts = re.findall(r"\d+", joblib.__version__)[:2]
    if tuple(int(p) for p in parts) < (1, 5):
        raise ImportError(
            f"hpcexec.adapters.joblib needs joblib >= 1.5, found "
            f"{joblib.__version__}: pip install -U 'joblib>=1.5'"
        )


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


# run_batches stays in this module: jobs name it by reference, so its module is part of
# their cache keys, and importing it in a job registers the backend there too.
def run_batches(batches: list[Callable[[], list]]) -> JobReport:
    """In the job: run joblib batches in order. An exception ends the job; hpcexec raises
    it again in the client with its own type."""
    report = JobReport(0.0 if os.environ.get(WORKER) else _process_age(), [])
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
        workers: on a scheduler, send the batches to a pool of long-lived worker jobs
            (default: yes unless ``cache``, whose results need a job each); the local
            backend starts its jobs warm already and never uses one.
        worker_idle: seconds a worker job waits for more batches before it leaves
            (default 30; the pool is also closed when the executor shuts down).
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

    def __init__(
        self,
        executor: hpcexec.Executor | None = None,
        *,
        scheduler: str | None = None,
        batch_seconds: float | None = None,
        max_jobs: int = DEFAULT_MAX_JOBS,
        cache: bool = False,
        probe_patience: float = 30.0,
        workers: bool | None = None,
        worker_idle: float = 30.0,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        **resources: Any,
    ) -> None:
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        for knob, value in (("batch_seconds", batch_seconds), ("probe_patience", probe_patience)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
            ):
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
            wrong = [k for k in resources if k in EXECUTOR_ARGS] + (
                ["scheduler"] if scheduler else []
            )
            if wrong:
                raise ResourceError(
                    f"{', '.join(wrong)} configure a new Executor; with executor= given, pass "
                    "only resources and job options (or build the Executor with them)"
                )
            if resources:
                executor = executor.options(**resources)
        self.executor: hpcexec.Executor | None = executor  # None only inside a job
        self.batch_seconds = batch_seconds
        self.max_jobs = max_jobs
        self._slots = local_slots(executor) if executor is not None else None
        self._pool = (
            JobPool(executor, run_batches, cache=cache, patience=probe_patience)
            if executor is not None
            else None
        )
        self._workers: hpcexec.WorkerPool | None = None
        self._workers_for: tuple[int, Any] | None = None
        self.use_workers = self._slots is None and (not cache if workers is None else workers)
        self.worker_idle = worker_idle
        self.parallel = None
        self._n_jobs = 1

    @property
    def _jobs(self) -> JobPool:
        if self._pool is None:
            raise RuntimeError(
                "inside a job, Parallel calls on the hpcexec backend run in the "
                "job (configure falls back to threads); no jobs are submitted"
            )
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
        if self._slots is not None:
            return LOCAL_BATCH_SECONDS
        return WORKER_BATCH_SECONDS if self.use_workers else SCHEDULER_BATCH_SECONDS

    def compute_batch_size(self) -> int:
        """Tasks per joblib batch: enough for ``batch_seconds`` once a task was timed."""
        per_task = self._jobs.measured_task_seconds()
        if per_task is None:
            return 1
        return self._jobs.tasks_for(per_task)

    def batch_completed(self, batch_size: int, duration: float) -> None:
        """Ignored: the time from dispatch to completion is mostly queue wait and job
        start-up here; batches are sized from the run time measured inside the jobs."""

    # -- a call ----------------------------------------------------------------------------
    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        **backend_kwargs: Any,
    ) -> int:
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
            env = {
                **self.executor.resources.env_dict,
                **{v: str(self.inner_max_num_threads) for v in THREAD_VARS},
            }
            pool.executor = self.executor.options(env=env)
        else:
            pool.executor = self.executor
        if self.use_workers:
            pool.workers = self._worker_pool(pool.executor)

    def _worker_pool(self, view: hpcexec.Executor) -> hpcexec.WorkerPool:
        """The pool of worker jobs for this call: the last call's, unless this one asks for
        more of them or for other job variables (a new pool; the old one's workers leave)."""
        wanted = (self._n_jobs, view.resources)
        if self._workers is None or self._workers_for != wanted:
            if self._workers is not None:
                self._workers.shutdown(wait=False)
            named = view if view.resources.name else view.options(name="joblib-worker")
            self._workers = named.workers(self._n_jobs, idle=self.worker_idle)
            self._workers_for = wanted
        return self._workers

    def stop_call(self) -> None:
        if self._pool is not None:
            self._pool.refill = None

    def _pull_batch(self) -> bool:
        """Have joblib dispatch one more batch of this call, as its own completion
        callbacks do; False when the call has nothing left to dispatch."""
        p = self.parallel
        if (
            p is None
            or getattr(p, "_aborting", True)
            or getattr(p, "_original_iterator", None) is None
        ):
            return False
        p.dispatch_next()
        return True

    def submit(self, func: Any, callback: Callable[[Outcome], None] | None = None) -> Batch:
        return self._jobs.add(func, callback or (lambda outcome: None))

    def retrieve_result_callback(self, out: Outcome) -> Any:
        if out.error is not None:
            raise out.error
        return out.value

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Cancel the jobs of this call that have not started and terminate those running;
        a pool of workers is shut down, as joblib's loky kills its workers."""
        if self._pool is not None:
            self._pool.abort()
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)
            self._workers = None

    def terminate(self) -> None:
        if self._pool is not None:
            self._pool.stop()

    def get_nested_backend(self) -> tuple[ParallelBackendBase, int | None]:
        """Inside a job: threads, as many as the job's cores; sequential in a one-core job."""
        level = (self.nesting_level or 0) + 1
        cores = self.executor.resources.cores if self.executor is not None else cpu_count()
        return nested_backend(level, cores)


def register() -> None:
    """Register the backend under the name ``"hpcexec"`` (done on import)."""
    register_parallel_backend(NAME, HpcexecBackend)


register()

__all__ = ["NAME", "HpcexecBackend", "JobReport", "register", "run_batches"]
