"""The Executor: ``concurrent.futures`` over batch jobs backed by persistent records.

The public API only; each stage of the work has its own module (``docs/architecture.md``
draws a ``submit`` from here to the runner and back): :mod:`~hpcexec.jobspec`
builds jobs, :mod:`~hpcexec.submission` submits them, :mod:`~hpcexec.preview` renders what
would be submitted, and the :class:`~hpcexec.session.Session` every view shares owns the
store, transport, driver and monitor.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .adoption import adopt
from .backends import SCHEDULERS, LocalBackend
from .config import resolve as resolve_settings
from .errors import BackendError, HpcexecError, ResourceError, UnknownJob
from .future import JobFuture, ShellResult
from .jobspec import (
    Job,
    JobMaker,
    extract_futures,
    file_directives,
    file_interpreter,
    map_chunksize,
    safe_name,
)
from .options import KEY_RE, JobOptions
from .preview import preview
from .resources import Resources, split_options
from .session import Session, detect_backend
from .settings import NAMES as SETTINGS
from .store import Store
from .submission import Submitter
from .waiting import wait
from .workers import WorkerPool

BACKENDS = ("local", *SCHEDULERS)  # the built-in ones; backend_names() adds registered ones


def _result_or_cancel(f: JobFuture, timeout: float | None) -> Any:
    """``f``'s result; cancelled when that fails (a timeout), as the stdlib's ``map`` does
    (only then: a future that gave its result is done, and a cancel() per element of a
    large map costs two lock round trips each)."""
    try:
        return f.result(timeout)
    except BaseException:
        f.cancel()
        raise


class Executor(concurrent.futures.Executor):
    """Run callables and shell bodies as batch jobs, with ``concurrent.futures`` semantics.

    Args:
        backend: ``"local"`` (the default: detached processes on this machine), a
            scheduler (``"slurm"``, ``"sge"``, ``"pbspro"``, ``"torque"``, ``"lsf"``) or
            ``"auto"``.
        cache_dir: where job records, payloads and results live (created private; default
            ``$HPCEXEC_CACHE_DIR``, else ``.hpcexec``).
        host: where jobs run: ``None`` for this machine, else a host reached over SSH (an
            alias from ``~/.ssh/config`` or ``user@host[:port]``) whose scheduler runs them;
            one connection is kept for the executor's life.
        python: the interpreter jobs run with (default: this one; on another host
            ``python3``; ``~`` is that host's home). On another host it is checked once for
            hpcexec and cloudpickle at this client's versions.
        remote_dir: on another host, where job files live (default ``~/.hpcexec``); jobs
            run there unless ``workdir`` says otherwise. Records stay in ``cache_dir`` here.
        ssh_key: a private key file for the SSH login (default: the agent, ``IdentityFile``
            from ``~/.ssh/config``, then the usual ``~/.ssh/id_*``).
        known_hosts: a known-hosts file read besides ``~/.ssh/known_hosts``; an unknown or
            changed host key is refused with a message that says how to add it.
        trust_on_first_use: accept and save an unknown host key (a changed one is still
            refused).
        poll_interval: the shortest time between status polls, in seconds (default: the
            backend's, 1 s for schedulers, backing off to 30 s while nothing changes).
        coalesce: seconds that separate ``submit`` calls are gathered for, so they go to a
            scheduler as one array job (0: submit each at once). Not used by ``"local"``.
        calls_per_second: the most scheduler commands (submit, status, cancel) per second.
        local_gpus: the GPUs the local backend hands out (``"0,1"``, a list, ``"none"``);
            default ``$HPCEXEC_LOCAL_GPUS``, else what ``nvidia-smi -L`` lists.
        max_queued: the most of this executor's jobs in a scheduler's queue (pending or
            running; an array element counts one) at once; the others wait in the cache and
            are submitted as jobs end (default: no cap). Not used by ``"local"``.
        local_cores: the most cores the local backend's jobs use at once (default: every
            core of the machine; fewer leaves room for other work).
        profile: a named profile from ``hpcexec.toml`` or ``~/.config/hpcexec/config.toml``
            (see :mod:`hpcexec.config`) giving any of the settings above and default
            resources; arguments given here override it. Default: ``$HPCEXEC_PROFILE``, else
            the files' ``default_profile``, else none; ``""`` selects none.
        **resources: default resources and job options for every job (see :meth:`options`).

    Jobs outlive the client: running the same script again reattaches to running jobs and
    returns finished results from the cache without submitting them again.
    """

    def __init__(
        self,
        backend: str | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        host: str | None = None,
        python: str | None = None,
        remote_dir: str | None = None,
        ssh_key: str | None = None,
        known_hosts: str | None = None,
        trust_on_first_use: bool | None = None,
        poll_interval: float | None = None,
        coalesce: float | None = None,
        calls_per_second: float | None = None,
        local_gpus: str | Sequence[str | int] | None = None,
        max_queued: int | None = None,
        local_cores: int | None = None,
        profile: str | None = None,
        **resources: Any,
    ) -> None:
        # The parameters named as ExecutorSettings' fields (a test keeps the two equal);
        # None means "not given": the profile's value, else the default (hpcexec.config).
        given = locals()
        s = resolve_settings(profile, {name: given[name] for name in SETTINGS})
        res, opts = split_options({**{k: v.value for k, v in s.resources.items()}, **resources})
        self._res = Resources.create(**res)
        self._opts = JobOptions(**opts)
        self._session = Session(s.effective())
        self._submitter = Submitter(self._session)
        self._session.backend.check(self._res)

    # -- views ---------------------------------------------------------------------------
    def options(self, **resources_and_options: Any) -> Executor:
        """An executor sharing this one's cache and monitor, with other resources or job
        options: ``name``, ``key`` (explicit cache key), ``force`` (run even if cached),
        ``retry`` (run a cached failure again, default True), ``hold``, ``after`` (futures
        that must complete first), ``array_limit`` (most elements of an array job running at
        once, on schedulers), ``reuse_slots`` (default True: an array element done with
        its task may run tasks of its array not started yet, a forked process each; locally,
        queued jobs alike may run in one job's process after it, "Lanes" in the schedulers
        docs; False gives every task its own element or process), ``prologue`` and ``epilogue`` (shell text run on this
        machine before the job is submitted and once after it ended) and ``aux_scripts``
        (``{"name.sh": text}`` written beside the job script); see :mod:`hpcexec.hooks`.
        The options are the fields of :class:`~hpcexec.options.JobOptions`: those named here
        replace the view's (``after`` too), the others stay."""
        res, opts = split_options(resources_and_options)
        view = object.__new__(Executor)
        view._session = self._session
        view._submitter = self._submitter
        view._res = self._res.replace(**res)
        view._opts = self._opts.replace(**opts)
        view._session.backend.check(view._res)
        return view

    @property
    def resources(self) -> Resources:
        return self._res

    @property
    def cache_dir(self) -> Path:
        return self._session.cache_dir

    @property
    def store(self) -> Store:
        """This executor's cache of job records, with every ``submit`` so far in it."""
        self._session.gathering.flush()
        return self._session.store

    @property
    def session(self) -> Session:
        """What every view of this executor shares: its store, transport, backend, driver
        and monitor, with read-only views of them for tools and tests (see
        :class:`~hpcexec.session.Session`)."""
        return self._session

    @property
    def job_options(self) -> JobOptions:
        """This view's job options (see :meth:`options`)."""
        return self._opts

    @property
    def _jobs(self) -> JobMaker:
        return JobMaker(self._session, self._res, self._opts)

    # -- submission ----------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> JobFuture:
        """Run ``fn(*args, **kwargs)`` as a job; its future holds the return value.
        Consecutive submits are written together (:mod:`hpcexec.gathering`)."""
        self._session.check_open()
        job, deps = self._jobs.call(fn, args, kwargs)
        job.futures = [JobFuture(self._session.control, job.key)]
        self._gather(job, self._opts.after_also(deps))
        return job.futures[0]

    def submit_shell(self, body: str, *, check: bool = True) -> JobFuture:
        """Run a shell body as a job. The future's result is a :class:`ShellResult`; a
        non-zero exit raises :class:`JobFailed` when ``check``. ``{placeholders}`` such as
        ``{threads}`` or ``{mem}`` are filled from the resources."""
        self._session.check_open()
        job = self._jobs.shell(body, check)
        job.futures = [JobFuture(self._session.control, job.key, check=check)]
        self._gather(job, self._opts)
        return job.futures[0]

    def _gather(self, job: Job, opts: JobOptions) -> None:
        """Submit ``job`` with the submits around it (see :mod:`hpcexec.gathering`), once
        what can fail at once was checked; here and now with a prologue (its failure is the
        caller's to see) or when the cache has it (its future is done at once, as before)."""
        gathering = self._session.gathering
        if opts.prologue or self._submitter.found(job, opts):
            gathering.now([job], opts, self._submitter.submit)
            return
        self._submitter.check([job], opts)
        gathering.add([job], opts, self._submitter.submit_checked)

    def submit_file(
        self, path: str | os.PathLike, *, check: bool = True, **resources: Any
    ) -> JobFuture:
        """Submit a job script you already have (a file on this machine) as a tracked job.

        The file is copied into the job's directory and run there by the interpreter its
        ``#!`` line names (bash without one), in ``workdir``; its exit code is recorded as
        for :meth:`submit_shell`, whose :class:`ShellResult` (or :class:`JobFailed` when
        ``check`` and non-zero) the future holds. The scheduler directives in the file's
        leading comment block (``#SBATCH``, ``#$``, ``#PBS``, ``#BSUB``, ...) are kept and
        come first; the ``resources`` given here and the executor's, and hpcexec's own job
        name, output, error and working directory, follow them and so win where both set an
        option, as command-line flags do over in-file directives. The cache key is the
        file's text with the resources: an unchanged file is not submitted twice."""
        self._session.check_open()
        view = self.options(**resources) if resources else self
        job = view._jobs.file(path, check)
        job.futures = [JobFuture(view._session.control, job.key, check=check)]
        view._session.gathering.now([job], view._opts, view._submitter.submit)
        return job.futures[0]

    def job_script(
        self, fn_or_body: Callable[..., Any] | str, /, *args: Any, **resources: Any
    ) -> str:
        """The exact script that submitting ``fn_or_body`` (a callable with ``args``, or a
        shell body) with these resources and job options would give the scheduler (on the
        local backend: run), writing and submitting nothing. On a scheduler it is the job
        submitted on its own: coalesced into an array, each element runs the same script
        body under the array's directives. Pass keyword arguments of a callable with
        :func:`functools.partial`."""
        view = self.options(**resources) if resources else self
        after = list(view._opts.after)
        if isinstance(fn_or_body, str):
            if args:
                raise ResourceError("a shell body takes no arguments: put them in the body")
            job = view._jobs.shell(fn_or_body, True)
        else:
            job, deps = view._jobs.call(fn_or_body, args, {})
            after += deps
        return preview(view._session, job, after, view._opts.hold)

    def file_script(self, path: str | os.PathLike, **resources: Any) -> str:
        """What :meth:`submit_file` would give the scheduler for ``path``; submits nothing."""
        view = self.options(**resources) if resources else self
        job = view._jobs.file(path, True)
        return preview(view._session, job, list(view._opts.after), view._opts.hold)

    def default_chunksize(self, n: int) -> int:
        """Calls per job for a ``map`` of ``n`` calls when ``chunksize`` is not given: on the
        local backend, one job per slot (cores // cores per job), so process start-up is
        paid once per slot. Give ``chunksize`` for uneven work or finer progress."""
        backend = self._session.backend
        if not isinstance(backend, LocalBackend):
            return 1  # a scheduler gets one array element per call
        slots = max(1, backend.total_cores // self._res.cores)
        return max(1, math.ceil(n / slots))

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        progress: bool = False,
    ) -> Iterator[Any]:
        """Like :meth:`concurrent.futures.Executor.map`: results in order, stopping at the
        shortest iterable, ``TimeoutError`` if a result is not ready ``timeout`` seconds after
        the call. ``chunksize`` calls share one job (default: :meth:`default_chunksize`)."""
        self._session.check_open()
        if timeout is not None:
            end_time = timeout + time.monotonic()
        if self._opts.key:
            raise ResourceError("job option 'key' names one job; map makes many: drop key=")
        # a map over one range: each job's index is its value (DRMAA's bulk jobs)
        indices = (
            list(iterables[0]) if len(iterables) == 1 and isinstance(iterables[0], range) else None
        )
        calls, deps = extract_futures([(args, {}) for args in zip(*iterables, strict=False)])
        chunksize = map_chunksize(self._res, chunksize, lambda: self.default_chunksize(len(calls)))
        base = self._res.name or safe_name(getattr(fn, "__name__", "map"))
        jobs = self._jobs.chunks(fn, calls, chunksize, bool(deps), base, indices)
        self._session.gathering.now(jobs, self._opts.after_also(deps), self._submitter.submit)
        fs = [f for j in jobs for f in j.futures]
        bar = None
        if progress:
            from .progress import attach_bar

            bar = attach_bar(fs, desc=base)

        def result_iterator() -> Iterator[Any]:
            try:
                fs.reverse()
                while fs:
                    yield _result_or_cancel(
                        fs.pop(), None if timeout is None else end_time - time.monotonic()
                    )
            finally:
                for f in fs:
                    f.cancel()
                if bar is not None:
                    bar.close()

        return result_iterator()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work. ``wait`` waits for every future; ``cancel_futures`` cancels
        the futures whose jobs have not started, and those jobs in the scheduler too unless
        another live future of this process still wants them. Running jobs are never
        killed: they outlive the client."""
        self._session.shutdown(wait, cancel_futures)

    # -- jobs by key -----------------------------------------------------------------------
    def attach(self, key: str) -> JobFuture:
        """A future for the job record ``key`` already in the cache (submitted by an earlier
        run, another client or the command line). It follows the record like the future
        ``submit`` returned: ``result()``, ``terminate()``, ``release()``, ``hold()``,
        ``stdout()``, ``info()``. Raises :class:`UnknownJob` if there is no such record and
        :class:`BackendError` if it belongs to another backend or host than this executor
        (open one with that ``backend`` and ``host``)."""
        self._session.check_open()
        session = self._session
        rec = session.store.get(key)
        if rec is None and KEY_RE.match(key):  # a lost cache: its job directory may tell
            # (or another client put the record back meanwhile: then that one stands)
            rec = self._submitter.recover({key: None}).get(key) or session.store.get(key)
        if rec is None:
            raise UnknownJob(
                f"no job record {key!r} in {session.store.path}: `hpcexec jobs` lists the records"
            )
        if (rec.backend, rec.host) != (session.backend.name, session.host):
            raise BackendError(
                f"job {key} belongs to backend {rec.backend!r} on {rec.host}, "
                f"this executor to {session.backend.name!r} on "
                f"{session.host}: open an Executor with "
                f"backend={rec.backend!r} (and host=) to follow it"
            )
        future = JobFuture(session.control, key)  # of a chunk job: its first call's value
        session.registry.watch(key, [future])  # before the look, so no change slips by
        session.monitor.start()
        session.tracker.records_changed([session.store.get(key) or rec])
        return future

    def adopt(self, job_id: str, *, name: str | None = None) -> JobFuture:
        """Follow a job started outside hpcexec by its scheduler id, as :meth:`attach`
        follows a record (see :mod:`hpcexec.adoption`): its future's result is a
        :class:`ShellResult` with the job's output where the scheduler tells its files."""
        self._session.check_open()
        return self.attach(adopt(self._session, str(job_id), name))

    def workers(self, n: int, *, idle: float = 30.0) -> WorkerPool:
        """Up to ``n`` jobs of this view that run submitted calls one after another, paying
        start-up once per worker; idle ``idle`` seconds, they leave (:mod:`hpcexec.workers`)."""
        self._session.check_open()
        return WorkerPool(self, n, idle)

    def wait_all(
        self, timeout: float | None = None, *, progress: bool = False
    ) -> concurrent.futures._base.DoneAndNotDoneFutures:
        """Wait for every job this executor's session still follows (DRMAA's
        ``synchronize(JOB_IDS_SESSION_ALL)``); see :func:`wait`."""
        return wait(self._session.futures(), timeout, progress=progress)

    def refresh(self) -> bool:
        """One status pass over this executor's unfinished records (one batched query; local
        jobs that now fit start), for tools that read records while no future waits (then
        the monitor does it). True if any record changed."""
        if self._session.watching():
            self._session.wake()
            return False
        return self._session.tracker.driver_poll()


__all__ = [
    "BACKENDS",
    "Executor",
    "HpcexecError",
    "JobFuture",
    "ShellResult",
    "detect_backend",
    "file_directives",
    "file_interpreter",
    "wait",
]
