"""A Dask cluster manager whose workers are hpcexec jobs.

:class:`HPCCluster` is a :class:`distributed.deploy.SpecCluster`: each worker is a shell job
submitted through an :class:`hpcexec.Executor`, so it is a job record like any other. It takes
dask-jobqueue's keyword names, so ``SLURMCluster(...)`` code moves over by changing the class
name (and saying ``backend="slurm"``)::

    from hpcexec.adapters.dask import HPCCluster
    cluster = HPCCluster(backend="slurm", cores=4, memory="16GB", walltime="01:00:00",
                         queue="debug")
    cluster.adapt(minimum=0, maximum=20)
    client = distributed.Client(cluster)

Beyond dask-jobqueue: the cluster reads from the records which worker jobs are pending and
which run (pending ones go first when it scales down); a worker job that ends while the
cluster still wants it (walltime, cancelled from outside) is replaced; and workers get a
lifetime from the walltime, so they retire gracefully before the scheduler kills them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
import weakref
from collections.abc import Callable
from typing import Any

try:
    from distributed.core import Status
    from distributed.deploy.spec import SpecCluster
    from distributed.utils import Log
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "hpcexec.adapters.dask needs dask and distributed: pip install 'hpcexec[dask]'"
    ) from e

import hpcexec
from hpcexec.adapters.dask_job import HPCJob
from hpcexec.adapters.dask_keywords import CONFIG_NAMES, JobqueueKeywords, from_jobqueue_keywords
from hpcexec.adapters.dask_scheduler import scheduler_spec
from hpcexec.adapters.dask_workerspec import WorkerJobSpec, default_lifetime_margin
from hpcexec.states import JobState

log = logging.getLogger(__name__)

MAX_QUICK_FAILURES = 3  # worker jobs failing in a row, soon after start, before replacing stops
QUICK = 60.0  # seconds: a worker job failing sooner counts as failing to start
REPLACE_GRACE = 2.0  # seconds between a worker job's end and the decision to replace it


def _weakly(method: Callable[[HPCJob], None]) -> Callable[[HPCJob], None]:
    """``method`` as a callback that does not keep its object alive (the cluster holds its
    worker spec, which holds the callback)."""
    ref = weakref.WeakMethod(method)

    def call(job: HPCJob) -> None:
        bound = ref()
        if bound is not None:
            bound(job)

    return call


class HPCCluster(SpecCluster):
    """A Dask cluster whose workers are hpcexec jobs.

    Args:
        backend: the Executor's backend (``"local"``, ``"slurm"``, ``"sge"``, ...; default:
            the profile's, else local).
        executor: an :class:`hpcexec.Executor` to submit through instead of a new one.
        cache_dir, poll_interval: for the new Executor.
        n_workers, name, config_name, silence_logs, asynchronous, loop: as in dask-jobqueue
            (``config_name`` picks the ``jobqueue.*`` section of dask's config read for
            keywords not given).
        **keywords: dask-jobqueue's keywords (the fields of
            :class:`~hpcexec.adapters.dask_keywords.JobqueueKeywords`: ``cores``, ``memory``,
            ``processes``, ``walltime``, ``queue``, ``account``, ``job_cpu``, ``job_mem``,
            ``job_extra_directives``, ``job_script_prologue``, ``worker_extra_args``,
            ``interface``, ``protocol``, ``death_timeout``, ``local_directory``,
            ``log_directory``, ``nanny``, ``python``, ``job_name``, ``worker_command``,
            ``scheduler_options``), and ``lifetime_margin``: seconds before the walltime at
            which workers retire gracefully (default: a tenth of the walltime, 1 to 10
            minutes; 0 for no lifetime). Any other keyword is an hpcexec resource for the
            jobs (``env=``, ``gpus=``, ...).

    ``scale(n)`` counts workers, ``scale(jobs=n)`` jobs; ``adapt`` takes ``minimum_jobs`` and
    ``maximum_jobs`` too. ``get_logs()`` includes every worker job's stdout and stderr.
    """

    def __init__(
        self,
        backend: str | None = None,
        *,
        executor: hpcexec.Executor | None = None,
        cache_dir: str | None = None,
        poll_interval: float | None = None,
        n_workers: int = 0,
        config_name: str | None = None,
        name: str | None = None,
        silence_logs: str | bool = "error",
        asynchronous: bool = False,
        loop: Any = None,
        **keywords: Any,
    ) -> None:
        owned = executor is None
        if executor is None:
            executor = hpcexec.Executor(backend, cache_dir=cache_dir, poll_interval=poll_interval)
        try:
            jobqueue = JobqueueKeywords.take(keywords)
            spec, meta = from_jobqueue_keywords(
                config_name or CONFIG_NAMES.get(backend or "local", backend or "local"),
                keywords,
                jobqueue,
            )
            self.executor = executor.options(**spec.resources)  # checks every resource now
        except BaseException:
            if owned:
                executor.shutdown(wait=False)
            raise
        self.spec = dataclasses.replace(spec, walltime=self.executor.resources.time)
        self.job_name = meta["job_name"]
        self._owned_executor = owned
        self._history: list[HPCJob] = []
        self._quick_failures = 0
        scheduler = scheduler_spec(
            self.executor, jobqueue.protocol, self.spec.interface, meta["scheduler_options"]
        )
        super().__init__(
            scheduler=scheduler,
            worker=self._worker_spec(meta["log_directory"]),
            loop=loop,
            silence_logs=silence_logs,
            asynchronous=asynchronous,
            name=name,
        )
        if n_workers:
            self.scale(n_workers)

    def _worker_spec(self, log_directory: str | None) -> dict[str, Any]:
        """SpecCluster's worker: one job, running ``spec.processes`` workers."""
        worker: dict[str, Any] = {
            "cls": HPCJob,
            "options": {
                "executor": self.executor,
                "spec": self.spec,
                "job_name": self.job_name,
                "log_directory": log_directory,
                "on_end": _weakly(self._worker_job_ended),
                "history": self._history,
                "cores": self.spec.cores,
                "memory": self.spec.memory,
            },
        }
        if self.spec.processes > 1:
            worker["group"] = [f"-{i}" for i in range(self.spec.processes)]
        return worker

    # -- jobqueue's names --------------------------------------------------------------
    def _new_worker_name(self, worker_number: int) -> str:
        return f"{self._name}-{worker_number}"

    def scale(  # type: ignore[override]  # dask-jobqueue's signature: jobs comes second
        self,
        n: int | None = None,
        jobs: int = 0,
        memory: str | None = None,
        cores: int | None = None,
    ) -> Any:
        """Scale to ``n`` workers (or ``jobs`` jobs, or enough for ``memory``/``cores``).
        Scaling down drops worker jobs still pending in the queue first."""
        if n is not None:
            jobs = math.ceil(n / self.spec.processes)
        if len(self.worker_spec) > jobs:
            pending = [
                name
                for name, job in list(self.workers.items())
                if name in self.worker_spec and job.state in (JobState.PENDING, JobState.HELD)
            ]
            while len(self.worker_spec) > jobs and pending:
                del self.worker_spec[pending.pop()]
        return super().scale(jobs, memory=memory, cores=cores)

    def adapt(
        self,
        *args: Any,
        minimum_jobs: int | None = None,
        maximum_jobs: int | None = None,
        **kwargs: Any,
    ):
        """:meth:`SpecCluster.adapt`, also by jobs (``minimum_jobs``, ``maximum_jobs``)."""
        if minimum_jobs is not None:
            kwargs["minimum"] = minimum_jobs * self.spec.processes
        if maximum_jobs is not None:
            kwargs["maximum"] = maximum_jobs * self.spec.processes
        return super().adapt(*args, **kwargs)

    # -- what the records say --------------------------------------------------------------
    def job_states(self) -> dict[str, JobState | None]:
        """The state of each current worker's job, from its record."""
        return {str(name): job.state for name, job in list(self.workers.items())}

    @property
    def pending_jobs(self) -> list[str]:
        """Workers whose jobs wait in the queue."""
        return [n for n, s in self.job_states().items() if s in (JobState.PENDING, JobState.HELD)]

    @property
    def running_jobs(self) -> list[str]:
        """Workers whose jobs run."""
        return [n for n, s in self.job_states().items() if s is JobState.RUNNING]

    def job_script(self) -> str:
        """The exact script a worker's job gives the scheduler, its directives included (as
        dask-jobqueue's ``job_script()``), for a worker named ``NAME``
        (:meth:`hpcexec.Executor.job_script` of the worker's shell body)."""
        address = getattr(self.scheduler, "address", None) or "tcp://SCHEDULER:8786"
        view = self.executor.options(name=self.job_name, reuse_slots=False)
        return view.job_script(self.spec.body(address, "NAME"))

    # -- logs ----------------------------------------------------------------------------
    def get_logs(
        self, cluster: bool = True, scheduler: bool = True, workers: bool = True, jobs: bool = True
    ):
        """The cluster's, scheduler's and workers' logs, and with ``jobs`` the stdout and
        stderr of every worker job this cluster submitted."""
        return self.sync(
            self._get_logs, cluster=cluster, scheduler=scheduler, workers=workers, jobs=jobs
        )

    async def _get_logs(
        self, cluster: bool = True, scheduler: bool = True, workers: bool = True, jobs: bool = True
    ):
        logs = await super()._get_logs(cluster=cluster, scheduler=scheduler, workers=workers)
        if jobs:
            for job in list(self._history):
                text = await asyncio.to_thread(job.output)
                logs[f"job {job.name} ({job.job_id})"] = Log(text)
        return logs

    # -- replacing ended jobs ----------------------------------------------------------------
    def _worker_job_ended(self, job: HPCJob) -> None:
        """A worker job ended (in the event loop): decide after a grace period, since a
        worker that Adaptive retires ends before Adaptive takes it out of the spec."""
        asyncio.get_running_loop().call_later(REPLACE_GRACE, self._replace_if_wanted, job)

    def _replace_if_wanted(self, job: HPCJob) -> None:
        """If the cluster still wants the worker of a job that ended, submit another job."""
        if self.status != Status.running or job.name not in self.worker_spec:
            return  # closing, or scaled down: the job was meant to end
        current = self.workers.get(job.name)
        if current is not None and current is not job:
            return  # a newer job already serves this worker
        if job.future is None:
            return  # never submitted: nothing ended
        rec = job.future.record
        if not self._should_replace(job, rec):
            return
        log.warning(
            "worker %s: job %s ended %s%s; submitting another",
            job.name,
            rec.job_id,
            rec.state.value,
            f" ({rec.reason})" if rec.reason else "",
        )
        if current is job:
            # A new name (taken while the old one is still in the spec, so the counter moves
            # on), so the replacement never meets the old worker at the scheduler.
            self.worker_spec.update(self.new_worker_spec())
            del self.worker_spec[job.name]
        self._correct_state()

    def _should_replace(self, job: HPCJob, rec: Any) -> bool:
        quick = rec.state in (JobState.FAILED, JobState.LOST) and (
            not rec.started or (rec.finished or time.time()) - rec.started < QUICK
        )
        self._quick_failures = self._quick_failures + 1 if quick else 0
        if self._quick_failures >= MAX_QUICK_FAILURES:
            log.error(
                "worker %s: %d worker jobs in a row failed soon after starting; not "
                "replacing them (scale again to retry). Last job's output:\n%s",
                job.name,
                self._quick_failures,
                job.output()[-2000:],
            )
            return False
        return True

    async def _close(self) -> None:
        await super()._close()
        if self._owned_executor:
            self.executor.shutdown(wait=False)


__all__ = ["HPCCluster", "HPCJob", "WorkerJobSpec", "default_lifetime_margin"]
