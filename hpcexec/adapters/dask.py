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
import shlex
import sys
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import dask
    from dask.utils import format_bytes, parse_bytes
    from distributed.core import Status
    from distributed.deploy.spec import ProcessInterface, SpecCluster
    from distributed.deploy.utils import nprocesses_nthreads
    from distributed.diagnostics.plugin import SchedulerPlugin
    from distributed.scheduler import Scheduler
    from distributed.utils import Log
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("hpcexec.adapters.dask needs dask and distributed: "
                      "pip install 'hpcexec[dask]'") from e

import hpcexec
from hpcexec.environment import Environment
from hpcexec.errors import ResourceError
from hpcexec.states import JobState

log = logging.getLogger(__name__)

# dask-jobqueue's configuration section for each backend (``jobqueue.<name>.*`` in dask's
# config), read for keywords not given, as dask-jobqueue does.
CONFIG_NAMES = {"slurm": "slurm", "sge": "sge", "pbspro": "pbs", "torque": "pbs",
                "lsf": "lsf", "local": "local"}
RENAMED = {"project": "account", "job_extra": "job_extra_directives",
           "env_extra": "job_script_prologue", "extra": "worker_extra_args"}
REFUSED = {
    "security": "TLS between scheduler and workers is not supported by HPCCluster yet; "
                "drop security= (or use dask-jobqueue for TLS)",
    "shebang": "hpcexec writes the job script, shell line included; drop shebang=",
    "job_directives_skip": "hpcexec renders the directives from the resources; leave a "
                           "resource unset rather than skipping its directive",
    "header_skip": "hpcexec renders the directives from the resources; leave a "
                   "resource unset rather than skipping its directive",
    "shared_temp_directory": "only used for TLS files, which HPCCluster does not support",
    "dashboard_address": "pass it in scheduler_options={'dashboard_address': ...}",
    "host": "pass it in scheduler_options={'host': ...}",
    "job_cls": "HPCCluster's workers are always hpcexec jobs",
}
MAX_QUICK_FAILURES = 3  # worker jobs failing in a row, soon after start, before replacing stops
QUICK = 60.0  # seconds: a worker job failing sooner counts as failing to start
TERMINATE_AGAIN = 5.0  # seconds after which a worker job still running is terminated again
REFRESH_AFTER_LEAVING = (0.2, 0.8, 1.0, 2.0, 4.0)  # pauses between looks at the jobs
REPLACE_GRACE = 2.0  # seconds between a worker job's end and the decision to replace it


def default_lifetime_margin(walltime: float) -> float:
    """Seconds before the walltime at which a worker starts retiring: a tenth of the
    walltime, at least a minute and at most ten, and never more than half of it."""
    return min(max(60.0, walltime / 10), 600.0, walltime / 2)


@dataclass(frozen=True)
class WorkerJobSpec:
    """What one worker job runs and asks for, from dask-jobqueue's keywords."""

    cores: int = 1
    memory: int | None = None  # bytes per job
    processes: int = 1
    walltime: float | None = None  # seconds
    nanny: bool = True
    death_timeout: float | None = 60
    local_directory: str | None = None
    interface: str | None = None
    protocol: str | None = None
    worker_extra_args: tuple[str, ...] = ()
    job_script_prologue: tuple[str, ...] = ()
    python: str = sys.executable
    worker_command: str = "distributed.cli.dask_worker"
    lifetime_margin: float | None = None  # None: default_lifetime_margin; 0: no lifetime
    python_path: tuple[str, ...] = ()  # put before the job's PYTHONPATH
    resources: dict[str, Any] = field(default_factory=dict)  # hpcexec resources of the job

    @property
    def threads_per_process(self) -> int:
        return max(1, self.cores // self.processes)

    def lifetime(self) -> tuple[float, float] | None:
        """(lifetime, stagger) in seconds for ``--lifetime``, from the walltime."""
        if self.walltime is None or self.lifetime_margin == 0:
            return None
        if any(a == "--lifetime" or a.startswith("--lifetime=") for a in self.worker_extra_args):
            return None  # the user's own
        margin = self.lifetime_margin or default_lifetime_margin(self.walltime)
        return self.walltime - margin, margin / 4

    def command(self, scheduler: str, name: str) -> str:
        args = [self.python, "-m", self.worker_command, scheduler, "--name", name,
                "--nthreads", str(self.threads_per_process)]
        if self.memory:
            args += ["--memory-limit", format_bytes(self.memory / self.processes).replace(" ", "")]
        if self.worker_command == "distributed.cli.dask_worker":
            if self.processes > 1:
                args += ["--nworkers", str(self.processes)]
            args.append("--nanny" if self.nanny else "--no-nanny")
        if self.death_timeout is not None:
            args += ["--death-timeout", str(self.death_timeout)]
        if self.local_directory:
            args += ["--local-directory", self.local_directory]
        if self.interface:
            args += ["--interface", self.interface]
        if self.protocol:
            args += ["--protocol", self.protocol]
        life = self.lifetime()
        if life:
            args += ["--lifetime", f"{int(life[0])}s", "--lifetime-stagger", f"{int(life[1])}s"]
        args += list(self.worker_extra_args)
        return " ".join(shlex.quote(str(a)) for a in args)

    def body(self, scheduler: str, name: str) -> str:
        """The shell body of the job: the client's import directories, the prologue, then
        the worker (not exec'd, so the job script records its exit code)."""
        lines = list(self.job_script_prologue)
        if self.python_path:
            path = shlex.quote(":".join(self.python_path))
            lines.insert(0, f"export PYTHONPATH={path}${{PYTHONPATH:+:$PYTHONPATH}}")
        return "\n".join([*lines, self.command(scheduler, name)])


def client_import_dirs() -> tuple[str, ...]:
    """The directories this process imports its own modules from (see
    :class:`hpcexec.environment.Environment`), so that functions pickled by reference import
    in the workers as they do here. hpcexec gives its Python jobs the same; a worker job is a
    shell job, so it gets them through PYTHONPATH."""
    return Environment.describe().own_dirs


def _end(future: Any) -> None:
    """Cancel a job still queued, terminate a running one, and terminate it once more if
    it still runs after a while: a worker that gets SIGTERM while it closes itself (retired
    by Adaptive) hangs until a second signal, which dask-worker takes as "exit now"."""
    if future.done() or future.cancel():
        return
    future.terminate()
    again = threading.Timer(TERMINATE_AGAIN, _terminate_again, (future,))
    again.daemon = True
    again.start()


def _terminate_again(future: Any) -> None:
    try:
        if not future.done():
            future.terminate()
    except Exception:  # the executor was shut down meanwhile: the job is left to its walltime
        log.warning("could not terminate worker job %s again", future.key, exc_info=True)


class HPCJob(ProcessInterface):
    """One Dask worker job, submitted through an :class:`hpcexec.Executor`."""

    def __init__(self, scheduler: str | None = None, name: str | None = None, *,
                 executor: hpcexec.Executor, spec: WorkerJobSpec, job_name: str = "dask-worker",
                 log_directory: str | None = None, cluster: Any = None,
                 history: list[HPCJob] | None = None, cores: int | None = None,
                 memory: int | None = None) -> None:
        super().__init__(scheduler=scheduler, name=name)
        self.scheduler_address = scheduler
        self.name = name
        self.executor = executor
        self.spec = spec
        self.job_name = job_name
        self.log_directory = log_directory
        self.future: hpcexec.JobFuture | None = None
        self._cluster_ref = cluster  # weakref to the HPCCluster, told when the job ends
        self._history = history
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def job_id(self) -> str | None:
        return self.future.job_id if self.future is not None else None

    @property
    def state(self) -> JobState | None:
        """The job's state from its record (None before it was submitted)."""
        return self.future.state if self.future is not None else None

    def _options(self) -> dict[str, Any]:
        key = f"dask-{uuid.uuid4().hex}"
        # Each worker gets its own array element: a long-lived worker must never be run by
        # another worker's element at the end of that one's walltime.
        options: dict[str, Any] = {"key": key, "name": self.job_name, "reuse_slots": False}
        if self.log_directory:
            base = Path(self.log_directory).absolute() / f"{self.job_name}-{self.name}-{key[5:13]}"
            options.update(stdout=f"{base}.out", stderr=f"{base}.err")
        return options

    async def start(self) -> None:
        body = self.spec.body(self.scheduler_address, str(self.name))
        view = self.executor.options(**self._options())
        self._loop = asyncio.get_running_loop()
        self.future = await asyncio.to_thread(view.submit_shell, body, check=False)
        if self._history is not None:
            self._history.append(self)
        log.info("worker %s: job %s submitted", self.name, self.future.key)
        self.future.add_done_callback(self._job_ended)
        await super().start()

    def _job_ended(self, future: Any) -> None:  # the executor's monitor thread
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._tell_cluster)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _tell_cluster(self) -> None:
        self._event_finished.set()
        cluster = self._cluster_ref() if self._cluster_ref is not None else None
        if cluster is not None:
            cluster._worker_job_ended(self)

    async def close(self) -> None:
        if self.future is not None and not self.future.done():
            await asyncio.to_thread(_end, self.future)
        await super().close()

    def output(self) -> str:
        """The job's stdout and stderr so far."""
        if self.future is None:
            return ""
        return f"--- stdout ---\n{self.future.stdout()}--- stderr ---\n{self.future.stderr()}"


class _WorkerLeft(SchedulerPlugin):
    """Has the executor look at its jobs at once when a worker leaves the scheduler, so a
    worker job that ended (cancelled, killed) is seen now, not at the next poll, which backs
    off to tens of seconds while nothing changes."""

    name = "hpcexec-worker-left"

    def __init__(self, executor: hpcexec.Executor) -> None:
        self.executor = executor

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        threading.Thread(target=self._refresh, name="hpcexec-refresh", daemon=True).start()

    def _refresh(self) -> None:
        # The worker's connection closes before the scheduler records the job's end: look
        # a few times over the next seconds.
        for delay in REFRESH_AFTER_LEAVING:
            time.sleep(delay)
            try:
                self.executor.refresh()
            except Exception:  # a closed executor, a failing command: the poll comes later
                log.debug("refresh after a worker left failed", exc_info=True)
                return


def _config(config_name: str, key: str, default: Any = None) -> Any:
    return dask.config.get(f"jobqueue.{config_name}.{key}", default)


def from_jobqueue_keywords(config_name: str, resources: dict[str, Any],
                           **kw: Any) -> tuple[WorkerJobSpec, dict[str, Any]]:
    """Read dask-jobqueue's keywords (and, for those not given, its ``jobqueue.<config_name>``
    section of dask's config) into a worker job spec; also the job name, log directory and
    scheduler options. ``resources`` are hpcexec resources, and may hold jobqueue's old or
    refused keyword names."""
    resources = dict(resources)
    for old, new in RENAMED.items():
        if old in resources:
            log.warning("%s= is dask-jobqueue's old name of %s=; taking it as %s=", old, new, new)
            value = resources.pop(old)
            if kw.get(new) is None:
                kw[new] = value
    refused = [k for k in resources if k in REFUSED]
    if refused:
        raise ResourceError("; ".join(f"{k}=: {REFUSED[k]}" for k in refused))

    def given(key: str, default: Any = None) -> Any:
        value = kw.get(key)
        if value is None:
            value = _config(config_name, key.replace("_", "-"), None)
        return default if value is None else value

    cores = given("cores", 1)
    memory = given("memory")
    processes = given("processes") or nprocesses_nthreads(cores)[0]
    if processes < 1 or cores < processes:
        raise ResourceError(f"processes={processes} must be between 1 and cores={cores}")
    job_resources = {
        "threads": given("job_cpu") or cores, "mem": _mib(given("job_mem") or memory),
        "time": given("walltime"), "queue": given("queue"), "account": given("account"),
        "native": list(given("job_extra_directives", [])), **resources}
    spec = WorkerJobSpec(
        cores=cores, memory=parse_bytes(memory) if memory else None, processes=processes,
        nanny=kw.get("nanny", True), death_timeout=given("death_timeout", 60),
        local_directory=given("local_directory"), interface=given("interface"),
        protocol=kw.get("protocol"), worker_extra_args=tuple(given("worker_extra_args", [])),
        job_script_prologue=tuple(given("job_script_prologue", [])),
        python=given("python", sys.executable),
        worker_command=given("worker_command", "distributed.cli.dask_worker"),
        lifetime_margin=kw.get("lifetime_margin"), python_path=client_import_dirs(),
        resources={k: v for k, v in job_resources.items() if v not in (None, [])})
    meta = {"job_name": given("job_name") or _config(config_name, "name") or "dask-worker",
            "log_directory": given("log_directory"),
            "scheduler_options": given("scheduler_options", {})}
    return spec, meta


class HPCCluster(SpecCluster):
    """A Dask cluster whose workers are hpcexec jobs.

    Args:
        backend: the Executor's backend (``"local"``, ``"slurm"``, ``"sge"``, ...; default:
            the profile's, else local).
        executor: an :class:`hpcexec.Executor` to submit through instead of a new one.
        cache_dir, poll_interval: for the new Executor.
        cores, memory, processes, walltime, queue, account, job_cpu, job_mem,
        job_extra_directives, job_script_prologue, worker_extra_args, interface, protocol,
        death_timeout, local_directory, log_directory, nanny, python, job_name,
        worker_command, n_workers, name, scheduler_options, config_name, silence_logs,
        asynchronous, loop: as in dask-jobqueue (``config_name`` picks the ``jobqueue.*``
            section of dask's config read for keywords not given).
        lifetime_margin: seconds before the walltime at which workers retire gracefully
            (default: a tenth of the walltime, 1 to 10 minutes; 0 for no lifetime).
        **resources: other hpcexec resources for the jobs (``env=``, ``gpus=``, ...).

    ``scale(n)`` counts workers, ``scale(jobs=n)`` jobs; ``adapt`` takes ``minimum_jobs`` and
    ``maximum_jobs`` too. ``get_logs()`` includes every worker job's stdout and stderr.
    """

    def __init__(self, backend: str | None = None, *,
                 executor: hpcexec.Executor | None = None, cache_dir: str | None = None,
                 poll_interval: float | None = None,
                 n_workers: int = 0, cores: int | None = None, memory: str | int | None = None,
                 processes: int | None = None, walltime: Any = None, queue: str | None = None,
                 account: str | None = None, job_cpu: int | None = None,
                 job_mem: str | int | None = None,
                 job_extra_directives: list[str] | None = None,
                 job_script_prologue: list[str] | None = None,
                 worker_extra_args: list[str] | None = None, interface: str | None = None,
                 protocol: str | None = None, death_timeout: float | None = None,
                 local_directory: str | None = None, log_directory: str | None = None,
                 nanny: bool = True, python: str | None = None, job_name: str | None = None,
                 worker_command: str | None = None, lifetime_margin: float | None = None,
                 config_name: str | None = None, name: str | None = None,
                 scheduler_options: dict[str, Any] | None = None,
                 silence_logs: str | bool = "error", asynchronous: bool = False,
                 loop: Any = None, **resources: Any) -> None:
        owned = executor is None
        if executor is None:
            executor = hpcexec.Executor(backend, cache_dir=cache_dir, poll_interval=poll_interval)
        try:
            spec, meta = from_jobqueue_keywords(
                config_name or CONFIG_NAMES.get(backend or "local", backend), resources,
                cores=cores,
                memory=memory, processes=processes, walltime=walltime, queue=queue,
                account=account, job_cpu=job_cpu, job_mem=job_mem,
                job_extra_directives=job_extra_directives,
                job_script_prologue=job_script_prologue, worker_extra_args=worker_extra_args,
                interface=interface, protocol=protocol, death_timeout=death_timeout,
                local_directory=local_directory, log_directory=log_directory, nanny=nanny,
                python=python, job_name=job_name, worker_command=worker_command,
                lifetime_margin=lifetime_margin, scheduler_options=scheduler_options)
            self.executor = executor.options(**spec.resources)  # checks every resource now
        except BaseException:
            if owned:
                executor.shutdown(wait=False)
            raise
        self.spec = dataclasses.replace(spec, walltime=self.executor.resources.time)
        self.job_name = meta["job_name"]
        self._owned_executor = owned
        self._backend_name = (backend or "the profile's backend") if owned else \
            "the executor's backend"
        self._history: list[HPCJob] = []
        self._quick_failures = 0
        super().__init__(scheduler=self._scheduler_spec(protocol, meta["scheduler_options"]),
                         worker=self._worker_spec(meta["log_directory"]), loop=loop,
                         silence_logs=silence_logs, asynchronous=asynchronous, name=name)
        if n_workers:
            self.scale(n_workers)

    def _scheduler_spec(self, protocol: str | None,
                        scheduler_options: dict[str, Any]) -> dict[str, Any]:
        """SpecCluster's scheduler: dask's, told by a plugin when a worker leaves."""
        options = {"dashboard_address": ":8787", "protocol": protocol,
                   **({"interface": self.spec.interface} if self.spec.interface else {}),
                   **scheduler_options}
        options["plugins"] = [*options.get("plugins", ()), _WorkerLeft(self.executor)]
        return {"cls": Scheduler, "options": options}

    def _worker_spec(self, log_directory: str | None) -> dict[str, Any]:
        """SpecCluster's worker: one job, running ``spec.processes`` workers."""
        worker: dict[str, Any] = {"cls": HPCJob, "options": {
            "executor": self.executor, "spec": self.spec, "job_name": self.job_name,
            "log_directory": log_directory,
            "cluster": weakref.ref(self), "history": self._history,
            "cores": self.spec.cores, "memory": self.spec.memory}}
        if self.spec.processes > 1:
            worker["group"] = [f"-{i}" for i in range(self.spec.processes)]
        return worker

    # -- jobqueue's names --------------------------------------------------------------
    def _new_worker_name(self, worker_number: int) -> str:
        return f"{self._name}-{worker_number}"

    def scale(self, n: int | None = None, jobs: int = 0, memory: str | None = None,
              cores: int | None = None):
        """Scale to ``n`` workers (or ``jobs`` jobs, or enough for ``memory``/``cores``).
        Scaling down drops worker jobs still pending in the queue first."""
        if n is not None:
            jobs = math.ceil(n / self.spec.processes)
        if len(self.worker_spec) > jobs:
            pending = [name for name, job in list(self.workers.items())
                       if name in self.worker_spec and job.state in (JobState.PENDING,
                                                                     JobState.HELD)]
            while len(self.worker_spec) > jobs and pending:
                del self.worker_spec[pending.pop()]
        return super().scale(jobs, memory=memory, cores=cores)

    def adapt(self, *args: Any, minimum_jobs: int | None = None,
              maximum_jobs: int | None = None, **kwargs: Any):
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
        """What each worker job runs: the shell body hpcexec submits, under a comment
        naming the resources it renders as the scheduler's directives at submission."""
        address = getattr(self.scheduler, "address", None) or "tcp://SCHEDULER:8786"
        resources = " ".join(f"{k}={v}" for k, v in sorted(self.spec.resources.items()))
        return (f"# hpcexec job ({self._backend_name}) with resources: {resources}\n"
                f"{self.spec.body(address, 'NAME')}\n")

    # -- logs ----------------------------------------------------------------------------
    def get_logs(self, cluster: bool = True, scheduler: bool = True, workers: bool = True,
                 jobs: bool = True):
        """The cluster's, scheduler's and workers' logs, and with ``jobs`` the stdout and
        stderr of every worker job this cluster submitted."""
        return self.sync(self._get_logs, cluster=cluster, scheduler=scheduler,
                         workers=workers, jobs=jobs)

    async def _get_logs(self, cluster: bool = True, scheduler: bool = True,
                        workers: bool = True, jobs: bool = True):
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
        rec = job.future.record
        if not self._should_replace(job, rec):
            return
        log.warning("worker %s: job %s ended %s%s; submitting another", job.name, rec.job_id,
                    rec.state.value, f" ({rec.reason})" if rec.reason else "")
        if current is job:
            # A new name (taken while the old one is still in the spec, so the counter moves
            # on), so the replacement never meets the old worker at the scheduler.
            self.worker_spec.update(self.new_worker_spec())
            del self.worker_spec[job.name]
        self._correct_state()

    def _should_replace(self, job: HPCJob, rec: Any) -> bool:
        quick = rec.state in (JobState.FAILED, JobState.LOST) and (
            not rec.started or (rec.finished or time.time()) - rec.started < QUICK)
        self._quick_failures = self._quick_failures + 1 if quick else 0
        if self._quick_failures >= MAX_QUICK_FAILURES:
            log.error("worker %s: %d worker jobs in a row failed soon after starting; not "
                      "replacing them (scale again to retry). Last job's output:\n%s",
                      job.name, self._quick_failures, job.output()[-2000:])
            return False
        return True

    async def _close(self) -> None:
        await super()._close()
        if self._owned_executor:
            self.executor.shutdown(wait=False)


def _mib(memory: str | int | None) -> int | None:
    """MiB for hpcexec's ``mem`` from dask's byte strings (``"16GB"``, ``"4 GiB"``)."""
    if memory is None:
        return None
    return max(1, math.ceil(parse_bytes(memory) / 2**20))


__all__ = ["HPCCluster", "HPCJob", "WorkerJobSpec", "default_lifetime_margin"]
