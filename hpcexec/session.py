"""One client's session: the store, transport, backend, driver and monitor it owns, and
their lifetime. Every view of an Executor (:meth:`Executor.options`) shares one.

The path of one ``submit`` through the session's objects, from the Executor to the runner
and back, is drawn once, in ``docs/architecture.md`` (its section "One ``submit``").
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import posixpath
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from . import integrity, trust
from .backends import (
    Backend,
    LocalBackend,
    backend_names,
    scheduler_class,
    schedulers,
    unknown_backend,
)
from .control import Controls
from .driver import Driver
from .environment import Environment
from .epilogues import Epilogues
from .errors import BackendError, CacheError, ResourceError
from .future import JobFuture
from .gathering import Gathering
from .layout import place
from .localqueue import LocalQueue
from .monitor import Monitor
from .outcomes import Outcomes
from .registry import Registry
from .remote import (
    DEFAULT_REMOTE_DIR,
    DEFAULT_REMOTE_PYTHON,
    SSHOptions,
    check_python,
    is_local,
    open_ssh,
)
from .resources import Resources
from .schedqueue import PEEKS, REMOTE_PEEKS, SchedulerQueue
from .settings import DEFAULTS, NUMBERS, ExecutorSettings, number_wanted, parse_gpu_ids
from .store import Store
from .tracker import Tracker
from .transport.base import Transport
from .transport.local import LocalShell
from .trust import PathStat

log = logging.getLogger(__name__)


def detect_backend(which: Callable[[str], str | None]) -> str:
    """The first scheduler (built-in, then registered) whose commands are on PATH, else
    ``"local"``."""
    for name, cls in schedulers().items():
        if cls.found_with(which) is None:
            return name
    return "local"


def check_settings(s: ExecutorSettings) -> None:
    """Refuse settings that cannot work together, saying what to change."""
    backend, host, ssh = s.backend, s.host, SSHOptions.of(s)
    if backend != "auto" and backend not in backend_names():
        raise unknown_backend(backend, " or 'auto'")
    if is_local(host) and ssh.given():
        raise ResourceError(
            f"{', '.join(ssh.given())} apply to jobs on another host; "
            f"give host= too, or leave them out"
        )
    if not is_local(host) and backend == "local":
        raise BackendError(
            f"the local backend runs jobs on this machine; for jobs on "
            f"{host} use its scheduler's backend ('slurm', 'sge', ...) or "
            f"'auto'"
        )
    for knob in NUMBERS:
        value = getattr(s, knob)
        if value is None and DEFAULTS[knob] is None:
            continue  # the backend's own
        wanted = number_wanted(knob, value)
        if wanted:
            raise ResourceError(f"{knob} must be {wanted}, not {value!r}")


class Session:
    """Store, transport, backend, driver (``queue``) and monitor of one client, and the
    futures it follows, opened with an executor's effective settings. Read-only for users and
    tests: ``settings``, ``store``, ``transport``, ``backend``, ``queue`` (the driver),
    ``host``, ``cache_dir``, ``jobs_dir``, ``python``, ``poll_interval``, :attr:`calls`,
    :meth:`futures`."""

    def __init__(self, settings: ExecutorSettings) -> None:
        s, ssh = settings, SSHOptions.of(settings)
        check_settings(s)
        self.settings = settings
        self.cache_dir = Path(s.cache_dir).expanduser().absolute()
        try:
            self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"cannot create the cache directory {self.cache_dir}: {e}") from e
        self.store = Store(self.cache_dir)
        self.remote = not is_local(s.host)
        self._own_cache: tuple[int, list[str]] = (-1, [])
        self.transport: Transport = open_ssh(s.host, ssh) if self.remote else LocalShell()  # type: ignore[arg-type]
        try:
            self._set_up(s.backend, s.python, ssh, s.coalesce, s.calls_per_second)
        except BaseException:
            self.transport.close()
            raise
        self.host = self.transport.host
        self._lock = threading.Lock()
        self.closed = False
        self.closers: list[Callable[[bool, bool], None]] = []  # shut down before this session
        self._connect(s.poll_interval)

    def _connect(self, poll_interval: float | None) -> None:
        """The objects that follow this session's jobs and futures."""
        interval = poll_interval or self.backend.poll_min
        wake = self.wake
        self.gathering = Gathering()
        self.registry = Registry(os.path.realpath(self.store.path))
        self.outcomes = Outcomes(self.transport, self.keyring, self.queue, self.host)
        self.epilogues = Epilogues(self.store, self.transport, self.host, wake)
        self.tracker = Tracker(
            self.store, self.queue, self.transport, self.registry, self.outcomes, self.epilogues
        )
        self.control = Controls(
            self.store,
            self.queue,
            self.outcomes,
            str(self.jobs_dir),
            self.registry.where,
            wake,
            self.gathering,
        )
        self.monitor = Monitor(self.tracker, interval, max(self.backend.poll_max, interval))

    def _set_up(
        self,
        backend: str,
        python: str | None,
        ssh: SSHOptions,
        coalesce: float,
        calls_per_second: float,
    ) -> None:
        """Where job files live, the interpreter jobs run with, and the backend's driver."""
        which: Callable[[str], str | None] = self.transport.which
        self.env = Environment.describe(remote=self.remote)
        self.sys_path = self.env.job_sys_path()
        if self.remote:
            self.files_dir = self.transport.expand_path(ssh.remote_dir or DEFAULT_REMOTE_DIR)
            commands = sorted({c for cls in schedulers().values() for c in cls.commands})
            # The remote Python is checked on the shell while the files are set up over SFTP,
            # and the user id their trust checks compare with is asked on a second shell (the
            # transport keeps it): on a distant link each is a few round trips, so they go
            # side by side.
            with concurrent.futures.ThreadPoolExecutor(2, "hpcexec-connect") as pool:
                checked = pool.submit(
                    check_python, self.transport, python or DEFAULT_REMOTE_PYTHON, commands
                )
                pool.submit(self.transport.user_id)  # its error, if any, comes again below
                failed = self._set_up_files()
            remote = checked.result()  # its error first, as when it was checked first
            if failed is not None:
                raise failed
            self.python = remote.path
            which = remote.commands.get  # one round trip, not one per command
        else:
            self.files_dir = str(self.cache_dir)  # job files beside the records
            self.python = python or sys.executable
            if (failed := self._set_up_files()) is not None:
                raise failed
        if backend == "auto":
            backend = detect_backend(which)
            log.info("backend 'auto' chose %r", backend)
        self._open_driver(backend, which, coalesce, calls_per_second)

    def _set_up_files(self) -> Exception | None:
        """The jobs directory and the jobs' copy of the key, checked (what went wrong, for
        the caller to raise). Every path is looked at together (one round trip over SSH)."""
        self.jobs_dir = Path(self.files_dir) / "jobs"
        t = self.transport
        try:
            self.key = integrity.client_key(self.cache_dir)
            self.keyring = integrity.KeyRing(self.key)
            self.key_file = integrity.key_path(self.files_dir, self.key)
            jobs, secrets = str(self.jobs_dir), posixpath.dirname(self.key_file)
            seen = t.stat_paths([self.files_dir, jobs, secrets, self.key_file])
            if seen[jobs] is None:  # a new files directory: made private (0700), looked at
                t.make_dir(jobs)
                seen.update(t.stat_paths([self.files_dir, jobs]))
            trust.check(
                self.files_dir, "the job files directory", files=t, seen=seen[self.files_dir]
            )
            trust.check(jobs, "the jobs directory", repair=True, files=t, seen=seen[jobs])
            if seen[secrets] is None:
                t.make_dir(secrets)  # private (0700)
            else:
                trust.check(secrets, "the keys directory", repair=True, files=t, seen=seen[secrets])
            self._install_key(seen[self.key_file])
        except Exception as e:  # noqa: BLE001 - raised by the caller, after the Python check
            return e
        return None

    def _open_driver(
        self,
        backend: str,
        which: Callable[[str], str | None],
        coalesce: float,
        calls_per_second: float,
    ) -> None:
        self.backend: Backend
        self.queue: Driver
        if backend == "local":
            cores = self.transport.cpu_count()
            if self.settings.local_cores:  # a cap; the machine's own count still bounds it
                cores = min(cores, self.settings.local_cores)
            self.backend = LocalBackend(cores, self.transport.host, gpu_ids=self._gpu_pool())
            self.queue = LocalQueue(self.store, self.transport, self.backend, self.key_file)
            return
        self.backend = scheduler_class(backend)()
        if not all(which(c) for c in self.backend.commands):
            where = (
                f"on {self.transport.host}'s PATH for a non-interactive SSH login"
                if self.remote
                else "on PATH"
            )
            hint = (
                "set PATH in the remote shell's startup file"
                if self.remote
                else "run on the cluster's login node, or use host= (SSH)"
            )
            raise BackendError(
                f"backend {backend!r} needs {', '.join(self.backend.commands)} "
                f"{where} and they are not there: {hint}"
            )
        self.queue = SchedulerQueue(
            self.store,
            self.transport,
            self.backend,
            self.files_dir,
            window=coalesce,
            max_window=max(2.0, 10 * coalesce),
            calls_per_second=calls_per_second,
            max_queued=self.settings.max_queued,
            peeks=(REMOTE_PEEKS if self.remote else PEEKS) if self.backend.output_live else 0,
        )

    def _gpu_pool(self) -> tuple[str, ...]:
        """The GPUs the local backend hands out: the ``local_gpus`` setting (or
        ``$HPCEXEC_LOCAL_GPUS``, see :mod:`hpcexec.config`), else what the transport's host
        lists (``nvidia-smi -L``)."""
        value = self.settings.local_gpus
        if value is None:
            return tuple(self.transport.gpu_ids())
        try:
            return parse_gpu_ids(value)
        except ValueError as e:
            raise ResourceError(f"local_gpus takes GPU ids such as '0,1', or 'none': {e}") from None

    def _install_key(self, seen: PathStat | None) -> None:
        """The jobs' copy of the cache key (``<files dir>/secrets/<id>``; ``seen``: its stat,
        None when missing): written once, private, and checked: the user's, and private."""
        if seen is None:
            self.transport.write_bytes(self.key_file, self.key)
            self.transport.chmod(self.key_file, 0o600)
            return
        trust.check(
            self.key_file,
            "the jobs' copy of the cache key",
            forbidden=trust.ANY_ACCESS,
            repair=True,
            files=self.transport,
            seen=seen,
        )

    # -- read-only views -------------------------------------------------------------------
    @property
    def poll_interval(self) -> float:
        """The shortest time between the monitor's status polls, in seconds."""
        return self.monitor.interval

    @property
    def calls(self) -> Mapping[str, int]:
        """How many times each scheduler command ran (``{"sbatch": 1, "squeue": 4}``); empty
        on the local backend. A live read-only view."""
        return MappingProxyType(getattr(self.queue, "calls", {}))

    def futures(self) -> list[JobFuture]:
        """The futures this session still follows (not done yet), every ``submit`` so far
        submitted first."""
        self.gathering.flush()
        return self.registry.all()

    def watching(self) -> bool:
        """Whether any future still waits."""
        return self.registry.watching()

    def job_dir(self, key: str) -> str:
        """Where job ``key``'s files are."""
        return str(self.jobs_dir / key)

    def wake(self) -> None:
        """Have the monitor poll now (starting it if needed)."""
        self.monitor.wake()

    # -- what jobs are submitted with --------------------------------------------------------
    def by_value(self) -> list[str]:
        """Modules whose code goes inside payloads (see :meth:`Environment.by_value`),
        looked for again only when modules were imported since."""
        if self._own_cache[0] != len(sys.modules):
            self._own_cache = (len(sys.modules), self.env.by_value())
        return self._own_cache[1]

    def placed(self, res: Resources) -> dict[str, str]:
        """A job's path resources as it will run (see :func:`hpcexec.layout.place`): its
        ``workdir`` absolute, relative to the current directory here or the remote
        directory on another host."""
        return place(
            res.to_dict(),
            base=self.files_dir if self.remote else os.getcwd(),
            expand=self.transport.expand_path,
            local=not self.remote,
        )

    def check_workdir(self, path: str) -> None:
        """Refuse a job whose workdir ``path`` (as :meth:`placed` makes it) on this machine
        does not exist or is no directory (on another host the job's start tells)."""
        if self.remote:
            return
        if not os.path.isdir(path):
            why = "is not a directory" if os.path.exists(path) else "does not exist"
            raise ResourceError(
                f"the workdir {path} {why}: create it, or give the directory the job should run in"
            )

    # -- lifetime ------------------------------------------------------------------------------
    def check_open(self) -> None:
        if self.closed:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        """Stop accepting work; see :meth:`hpcexec.Executor.shutdown`."""
        with self._lock:
            self.closed = True
        for close in list(self.closers):  # worker pools: their workers are this session's jobs
            close(wait, cancel_futures)
        self.gathering.flush()  # what was submitted is submitted, waited for or not
        if cancel_futures:
            for f in self.futures():
                if not f.running():
                    f.cancel()
        if wait:
            concurrent.futures.wait(self.futures())
            self.epilogues.shutdown()
            self.monitor.stop(wait=True)
            self.store.close()
            self.transport.close()
        else:
            self.monitor.close_when_idle()
