"""The Executor: ``concurrent.futures`` over batch jobs backed by persistent records."""
from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import os
import posixpath
import re
import shlex
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from . import hooks, integrity, recovery, trust
from . import payload as pl
from .backends import (SCHEDULERS, Backend, LocalBackend, backend_names, scheduler_class,
                       schedulers, unknown_backend)
from .config import resolve as resolve_settings
from .driver import Driver
from .environment import Environment
from .errors import (BackendError, CacheError, HpcexecError, JobFailed, ResourceError,
                     OutOfMemory, PrologueFailed, TransportError, UnknownJob)
from .future import JobFuture, JobInfo, ShellResult
from .interest import INTEREST
from .layout import RECORD, JobLayout, place
from .localqueue import LocalQueue
from .schedqueue import FILE_DIRECTIVES, SchedulerQueue
from .monitor import Monitor
from .runner import FutureRef
from .remote import (DEFAULT_REMOTE_DIR, DEFAULT_REMOTE_PYTHON, SSHOptions, check_python,
                     is_local, open_ssh)
from .resources import Resources, split_options
from .script import render
from .states import JobState
from .store import JobRecord, Store
from .transport.base import Transport
from .transport.local import LocalShell

log = logging.getLogger(__name__)

BACKENDS = ("local", *SCHEDULERS)  # the built-in ones; backend_names() adds registered ones


def detect_backend(which: Callable[[str], str | None]) -> str:
    """The first scheduler (built-in, then registered) whose commands are on PATH, else
    ``"local"``."""
    for name, cls in schedulers().items():
        if all(which(c) for c in cls.commands):
            return name
    return "local"


_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
STDERR_TAIL_BYTES = 2000


@dataclass
class _Job:
    """One job about to be looked up or submitted."""

    kind: str  # call | chunk | shell
    key: str
    name: str
    res: Resources
    n: int  # futures it serves
    file_bytes: bytes | None = None  # payload (None for shell jobs)
    body: str | None = None  # shell body
    check: bool = True
    futures: list[JobFuture] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # more files beside the script
    directives: tuple[str, ...] = ()  # of a submitted job file, before hpcexec's own


def _split_options(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Resources and job options; the script options (:data:`hooks.OPTIONS`) are taken
    here, before :func:`split_options` sees them."""
    values = dict(values)
    mine = {k: values.pop(k) for k in hooks.OPTIONS if k in values}
    res, opts = split_options(values)
    return res, {**opts, **mine}


def _job_options(opts: dict[str, Any]) -> dict[str, Any]:
    hooks.check_options(opts)
    for flag in ("force", "retry", "hold", "reuse_slots"):
        if flag in opts and not isinstance(opts[flag], bool):
            raise ResourceError(f"job option {flag!r} takes True or False, not {opts[flag]!r}")
    if "key" in opts and opts["key"] is not None:
        if not isinstance(opts["key"], str) or not _KEY_RE.match(opts["key"]):
            raise ResourceError(
                f"job option 'key' must be 1-128 letters, digits, '.', '_' or '-' starting with "
                f"a letter or digit, not {opts['key']!r}")
    if "array_limit" in opts and opts["array_limit"] is not None:
        limit = opts["array_limit"]
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ResourceError(f"job option 'array_limit' (most array elements running at "
                                f"once) takes a whole number >= 1, not {limit!r}")
    if "after" in opts:
        after = opts["after"]
        after = [after] if isinstance(after, JobFuture) else list(after or ())
        for f in after:
            if not isinstance(f, JobFuture):
                raise ResourceError(f"job option 'after' takes JobFutures, not {type(f).__name__}")
        opts["after"] = after
    return opts


def _extract_futures(calls: list[tuple[tuple, dict]]) -> tuple[list[tuple[tuple, dict]],
                                                                list[JobFuture]]:
    """Replace JobFutures in arguments (also inside lists, tuples and dicts) by references
    the job resolves from their result files; return the futures as dependencies."""
    found: list[JobFuture] = []

    def swap(obj: Any) -> Any:
        if isinstance(obj, JobFuture):
            found.append(obj)
            return FutureRef(str(obj._core.jobs_dir / obj.key), obj._index or 0, obj.key)
        if type(obj) in (list, tuple):
            return type(obj)(swap(x) for x in obj)
        if type(obj) is dict:
            return {k: swap(v) for k, v in obj.items()}
        return obj

    out = [(swap(args), swap(kwargs)) for args, kwargs in calls]
    return out, list({id(f): f for f in found}.values())


class _Core:
    """What every view of one Executor shares: store, transport, backend, monitor, futures."""

    def __init__(self, backend: str, cache_dir: str | os.PathLike, host: str | None,
                 python: str | None, poll_interval: float | None,
                 coalesce: float = 0.2, calls_per_second: float = 10.0,
                 ssh: SSHOptions = SSHOptions()) -> None:
        if backend != "auto" and backend not in backend_names():
            raise unknown_backend(backend, " or 'auto'")
        if is_local(host) and ssh.given():
            raise ResourceError(f"{', '.join(ssh.given())} apply to jobs on another host; "
                                f"give host= too, or leave them out")
        if not is_local(host) and backend == "local":
            raise BackendError(f"the local backend runs jobs on this machine; for jobs on "
                               f"{host} use its scheduler's backend ('slurm', 'sge', ...) or "
                               f"'auto'")
        for knob, value, least in (("poll_interval", poll_interval, 0.0),
                                   ("coalesce", coalesce, -1.0),
                                   ("calls_per_second", calls_per_second, 0.0)):
            if value is None and knob == "poll_interval":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= least:
                raise ResourceError(f"{knob} must be a {'non-negative' if least < 0 else 'positive'}"
                                    f" number, not {value!r}")
        self.cache_dir = Path(cache_dir).expanduser().absolute()
        try:
            self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"cannot create the cache directory {self.cache_dir}: {e}") from e
        self.store = Store(self.cache_dir)
        self.transport: Transport
        self.remote = not is_local(host)
        self._own_cache: tuple[int, list[str]] = (-1, [])
        if self.remote:
            self.transport = open_ssh(host, ssh)  # type: ignore[arg-type]
        else:
            self.transport = LocalShell()
        try:
            self._set_up(backend, python, ssh, coalesce, calls_per_second)
        except BaseException:
            self.transport.close()
            raise
        self.host = self.transport.host
        interval = poll_interval or self.backend.poll_min
        self.monitor = Monitor(self, interval, max(self.backend.poll_max, interval))
        self.closed = False
        self._lock = threading.RLock()
        self._watch: dict[str, list[JobFuture]] = {}  # the futures this monitor completes
        self._where = os.path.realpath(self.store.path)  # this cache, for INTEREST
        self._reapply: dict[str, JobRecord] = {}  # finished, but their files were unreachable
        self._epilogue_wait: set[str] = set()  # keys whose epilogue another client runs
        self._epilogue_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._placed: dict[str, set[str]] = {}  # submission tag -> staged dirs now in place
        self._replaced: dict[str, list[str]] = {}  # submission tag -> earlier dirs set aside

    def _set_up(self, backend: str, python: str | None, ssh: SSHOptions, coalesce: float,
                calls_per_second: float) -> None:
        """Where job files live, the interpreter jobs run with, and the backend's driver."""
        which: Callable[[str], str | None] = self.transport.which
        if self.remote:
            self.files_dir = self.transport.expand_path(ssh.remote_dir or DEFAULT_REMOTE_DIR)
            commands = sorted({c for cls in schedulers().values() for c in cls.commands})
            remote = check_python(self.transport, python or DEFAULT_REMOTE_PYTHON, commands)
            self.python = remote.path
            which = remote.commands.get  # one round trip, not one per command
        else:
            self.files_dir = str(self.cache_dir)  # job files beside the records
            self.python = python or sys.executable
        self.env = Environment.describe(remote=self.remote)
        self.sys_path = self.env.job_sys_path()
        self.jobs_dir = Path(self.files_dir) / "jobs"
        self.transport.make_dir(str(self.jobs_dir))
        trust.check(self.files_dir, "the job files directory", files=self.transport)
        trust.check(str(self.jobs_dir), "the jobs directory", repair=True, files=self.transport)
        self._install_key()
        if backend == "auto":
            backend = detect_backend(which)
            log.info("backend 'auto' chose %r", backend)
        self.backend: Backend
        self.queue: Driver
        if backend == "local":
            self.backend = LocalBackend(self.transport.cpu_count(), self.transport.host)
            self.queue = LocalQueue(self.store, self.transport, self.backend, self.key_file)
            return
        self.backend = scheduler_class(backend)()
        if not all(which(c) for c in self.backend.commands):
            where = (f"on {self.transport.host}'s PATH for a non-interactive SSH login"
                     if self.remote else "on PATH")
            hint = ("set PATH in the remote shell's startup file" if self.remote
                    else "run on the cluster's login node, or use host= (SSH)")
            raise BackendError(f"backend {backend!r} needs {', '.join(self.backend.commands)} "
                               f"{where} and they are not there: {hint}")
        self.queue = SchedulerQueue(self.store, self.transport, self.backend, self.files_dir,
                                    window=coalesce, max_window=max(2.0, 10 * coalesce),
                                    calls_per_second=calls_per_second)

    def _install_key(self) -> None:
        """This cache's key, and its copy where the jobs read it (``<files dir>/secrets/<id>``),
        both checked: the user's, and private."""
        self.key = integrity.client_key(self.cache_dir)
        self.keyring = integrity.KeyRing(self.key)
        self.key_file = integrity.key_path(self.files_dir, self.key)
        secrets_dir = posixpath.dirname(self.key_file)
        try:
            trust.check(secrets_dir, "the keys directory", repair=True, files=self.transport)
        except FileNotFoundError:
            self.transport.make_dir(secrets_dir)  # private (0700)
        try:
            trust.check(self.key_file, "the jobs' copy of the cache key",
                        forbidden=trust.ANY_ACCESS, repair=True, files=self.transport)
        except FileNotFoundError:
            self.transport.write_bytes(self.key_file, self.key)
            self.transport.chmod(self.key_file, 0o600)

    # -- futures -------------------------------------------------------------------------
    def watching(self) -> bool:
        with self._lock:
            return bool(self._watch)

    def all_futures(self) -> list[JobFuture]:
        with self._lock:
            return [f for fs in self._watch.values() for f in fs]

    def _watch_futures(self, key: str, futures: Sequence[JobFuture]) -> None:
        with self._lock:
            self._watch.setdefault(key, []).extend(futures)
        INTEREST.want(self._where, key, futures)

    def _unwatch_futures(self, key: str, futures: Sequence[JobFuture]) -> None:
        """Forget futures that were never handed out (their submission failed)."""
        with self._lock:
            mine = self._watch.get(key, [])
            for f in futures:
                if f in mine:
                    mine.remove(f)
            if not mine:
                self._watch.pop(key, None)
        INTEREST.forget(self._where, key, futures)

    def driver_poll(self) -> bool:
        changed = self.queue.poll()
        if self._reapply:
            self.records_changed(())
        if self._epilogue_wait:  # has the client running their epilogue died?
            with self._lock:
                keys, self._epilogue_wait = self._epilogue_wait, set()
            self.records_changed(self.store.get_many(keys).values())
        return changed

    def wait_fds(self) -> list[int]:
        return self.queue.wait_fds()

    def wake_in(self) -> float | None:
        if self._reapply or self._epilogue_wait:
            return min(self.queue.wake_in or 2.0, 2.0)
        return self.queue.wake_in

    def monitor_stopped(self) -> None:
        self.queue.close()
        self.transport.close()  # reopened if a finished future's files are read later

    def records_changed(self, records: Iterable[JobRecord]) -> None:
        with self._lock:
            todo = {**self._reapply, **{rec.key: rec for rec in records}}
            self._reapply.clear()
        for rec in todo.values():
            with self._lock:
                futures = list(self._watch.get(rec.key, ()))
            if not futures:
                continue
            try:
                self._apply(rec, futures)
            except _Unreachable as e:  # the outcome could not be fetched: again next pass
                log.warning("cannot fetch the outcome of %s yet (%s); trying again", rec.key, e)
                with self._lock:
                    self._reapply.setdefault(rec.key, rec)

    def _apply(self, rec: JobRecord, futures: list[JobFuture]) -> None:
        """Move futures along to what their record says (called outside any transaction)."""
        for f in futures:
            f._seen_state = rec.state
        if rec.state.started:
            for f in futures:
                if not f.done() and f._state == concurrent.futures._base.PENDING:
                    f.set_running_or_notify_cancel()
        if not rec.state.finished or not self._epilogue_settled(rec):
            return
        outcomes: list[bytes] | None = None
        outcome_error: Exception | None = None
        if rec.kind in ("call", "chunk"):  # read first: a TransportError leaves all as it was
            try:
                where = self.layout(rec).result
                data, _ = integrity.unseal(self.transport.read_bytes(where), self.keyring, where)
                outcomes = pl.load_outcomes(data, where)
            except FileNotFoundError:
                outcomes = None
            except CacheError as e:
                outcome_error = e
            except TransportError as e:
                raise _Unreachable(str(e)) from e
        settled: list[tuple[JobFuture, Any, BaseException | None]] = []
        for f in futures:
            if f.done():
                continue
            try:
                settled.append((f, self._value(rec, f, outcomes, outcome_error), None))
            except _Unreachable:
                raise  # the job's files could not be read: nothing changes, try again later
            except BaseException as e:  # the job's own exception, re-raised here
                settled.append((f, None, e))
        with self._lock:
            mine = self._watch.get(rec.key)
            if mine is not None:
                for f in futures:
                    if f in mine:
                        mine.remove(f)
                if not mine:
                    del self._watch[rec.key]
        for f, value, exc in settled:
            _set(f, result=value, exc=exc)

    # -- epilogues -----------------------------------------------------------------------
    def _epilogue_settled(self, rec: JobRecord) -> bool:
        """Whether an ended job's futures may complete: it has no epilogue, or its epilogue
        has run (or never will). Starts the epilogue when no client has claimed it."""
        if not rec.epilogue:
            return True
        word = hooks.state_word(rec.epilogue_state)
        if word is None:
            with self.store.write() as tx:  # claim it, so no other client runs it too
                cur = tx.get(rec.key)
                if cur is not None and cur.epilogue and cur.epilogue_state is None:
                    tx.update(rec.key, epilogue_state=hooks.claim())
                    hooks.running(self.store.path, rec.key, True)
            if cur is None or cur.epilogue_state is not None:  # another client's, or gone
                return cur is None or self._epilogue_settled(cur)
            self._start_epilogue(cur)
            return False
        if word in hooks.FINAL:
            return True
        if hooks.is_running(self.store.path, rec.key):
            return False  # running in this process; its end is a record change
        claim = hooks.Claim.parse(rec.epilogue_state or "")
        if claim is None or claim.mine() or claim.dead():
            why = hooks.interrupted(claim)
            with self.store.write() as tx:
                cur = tx.get(rec.key)
                if cur is not None and cur.epilogue_state == rec.epilogue_state:
                    tx.update(rec.key, epilogue_state=why)
            log.warning("the epilogue of job %s (%s) was %s", rec.name, rec.key, why)
            return True
        with self._lock:
            self._epilogue_wait.add(rec.key)  # looked at again while its client works
        return False

    def _start_epilogue(self, rec: JobRecord) -> None:
        with self._lock:
            if self._epilogue_pool is None:
                self._epilogue_pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix="hpcexec-epilogue")
            pool = self._epilogue_pool
        pool.submit(self._run_epilogue, rec)

    def _run_epilogue(self, rec: JobRecord) -> None:
        """Run a claimed epilogue (in a worker thread, so the monitor goes on polling), keep
        its output in the job directory and its outcome in the record; the record change
        lets the monitor complete the futures. A failure is logged, never the job's."""
        try:
            env = {**hooks.hook_env(rec.key, rec.name or "", rec.jobdir, self.host),
                   "HPCEXEC_JOB_ID": rec.job_id or "", "HPCEXEC_JOB_STATE": rec.state.value,
                   "HPCEXEC_EXIT_CODE": "" if rec.exit_code is None else str(rec.exit_code)}
            result, error = hooks.run_logged(rec.epilogue or "", env)
            where = os.path.join(rec.jobdir, hooks.EPILOGUE_LOG)
            try:
                self.transport.write_bytes(where, hooks.log_text(result, error))
            except (TransportError, OSError) as e:
                log.warning("cannot keep the epilogue output of %s in %s: %s", rec.key, where, e)
            if result is not None and result.ok:
                state = "done"
            else:
                why = hooks.hook_failure("the epilogue", result, error)
                state = f"failed: {why}"
                log.warning("job %s (%s): %s; its output is in %s (the job's result stands)",
                            rec.name, rec.key, why, where)
            with self.store.write() as tx:
                tx.update(rec.key, epilogue_state=state)
        except Exception:
            log.exception("running the epilogue of %s failed", rec.key)
        finally:
            hooks.running(self.store.path, rec.key, False)
            self.monitor.wake()

    def _value(self, rec: JobRecord, f: JobFuture, outcomes: list[bytes] | None,
               outcome_error: Exception | None) -> Any:
        if rec.kind == "shell":
            if rec.state is JobState.COMPLETED or (rec.state is JobState.FAILED
                                                   and rec.exit_code is not None and not rec.signal):
                result = ShellResult(rec.exit_code or 0, self.read_output(rec, "stdout"),
                                     self.read_output(rec, "stderr"))
                if result.returncode != 0 and f._check:
                    raise self._failure(rec, f"shell job {rec.name} exited with code {rec.exit_code}")
                return result
            raise self._failure(rec)
        if outcome_error is not None:
            raise outcome_error
        index = f._index or 0
        if outcomes is not None and index < len(outcomes):
            return pl.outcome_value(outcomes[index], self.layout(rec).result)
        if rec.state is JobState.COMPLETED:
            raise self._failure(rec, f"job {rec.name} ({rec.key}) ended but left no result file")
        raise self._failure(rec)

    def _failure(self, rec: JobRecord, message: str | None = None) -> JobFailed:
        if message is None:
            message = f"job {rec.name} ({rec.key}, id {rec.job_id}) ended {rec.state.value}"
            details = []
            if rec.exit_code is not None:
                details.append(f"exit code {rec.exit_code}")
            if rec.signal:
                details.append(f"signal {rec.signal}")
            if rec.reason:
                details.append(rec.reason)
            if details:
                message += ": " + "; ".join(details)
        try:
            err = self.transport.read_tail(self.layout(rec).stderr_target, STDERR_TAIL_BYTES)
        except OSError:  # no tail to show: its stderr names a directory, say
            err = ""
        cls = OutOfMemory if (rec.reason or "").startswith("out of memory") else JobFailed
        return cls(message, state=rec.state, exit_code=rec.exit_code, signal=rec.signal,
                         reason=rec.reason, key=rec.key, job_id=rec.job_id,
                         stderr_tail="\n".join(err.splitlines()[-20:]))

    # -- files ---------------------------------------------------------------------------
    def layout(self, rec: JobRecord) -> JobLayout:
        """Where a job's files are."""
        return JobLayout.of(rec.jobdir, rec.resources)

    def output_path(self, rec: JobRecord, stream: str) -> str:
        return self.layout(rec).output(stream)

    def read_output(self, rec: JobRecord, stream: str) -> str:
        try:
            return self.transport.read_bytes(self.output_path(rec, stream)).decode(errors="replace")
        except FileNotFoundError:
            return ""
        except TransportError as e:
            raise _Unreachable(str(e)) from e

    def info(self, key: str) -> JobInfo:
        rec = self.store.get(key)
        if rec is None:
            raise KeyError(f"no job record {key} in {self.store.path}")
        usage: dict[str, float] = {}
        try:
            for line in self.transport.read_bytes(self.layout(rec).usage).decode().splitlines():
                name, _, value = line.partition(" ")
                usage[name] = float(value)
        except (FileNotFoundError, ValueError):
            pass
        acct = self.queue.accounting(rec) if rec.state.finished else None
        wall = usage.get("wall_s")
        if wall is None and rec.started and rec.finished:
            wall = rec.finished - rec.started
        if acct is not None and acct.elapsed is not None:
            wall = acct.elapsed
        cpu = usage["user_s"] + usage["sys_s"] if "user_s" in usage else None
        rss = usage["max_rss_kib"] / 1024 if "max_rss_kib" in usage else None
        if acct is not None and acct.max_rss is not None:
            rss = max(rss or 0.0, float(acct.max_rss))
        aborted = rec.state in (JobState.CANCELLED, JobState.TIMEOUT, JobState.LOST) or bool(
            rec.signal) or (rec.state is JobState.FAILED and rec.exit_code is None)
        return JobInfo(rec.job_id, rec.state, rec.exit_code, rec.signal, aborted, rec.reason,
                       wall, cpu, rss, (acct.nodelist if acct else None) or (
                           self.host if rec.backend == "local" and rec.state.started else None))

    # -- control -------------------------------------------------------------------------
    def cancel_element(self, f: JobFuture) -> bool:
        """Whether ``f`` may be cancelled: its job has not started. The job itself is
        cancelled only when no other live future of this process wants it (identical
        calls, a chunk's other calls, another Executor's or attach's futures share it)."""
        def cancel_job() -> bool:
            if self.queue.cancel(f.key):
                return True
            now = self.store.get(f.key)  # cancelled meanwhile by someone else: fine too
            return now is not None and now.state is JobState.CANCELLED

        rec = self.store.get(f.key)
        if rec is None or rec.state.started:
            return False
        return INTEREST.withdraw(self._where, f.key, f, cancel_job) is not False

    def terminate(self, f: JobFuture) -> bool:
        """End ``f``'s job whether it waits or runs, unless another live future of this
        process still wants it: then only ``f`` fails, at once, and the job goes on."""
        ended = INTEREST.withdraw(self._where, f.key, f, lambda: self.queue.terminate(f.key))
        if ended is None:
            rec = self.store.get(f.key)
            _set(f, exc=JobFailed(
                f"job {f.key} was terminated for this future only: other futures of this "
                f"process still want it, so it goes on for them", state=JobState.CANCELLED,
                reason="terminated for this future; the job goes on for other futures",
                key=f.key, job_id=rec.job_id if rec else None))
            return True
        self.monitor.wake()
        return ended

    def release(self, key: str) -> bool:
        ok = self.queue.release(key)
        self.monitor.wake()
        return ok

    def suspend(self, key: str) -> bool:
        return self.queue.suspend(key)

    def resume(self, key: str) -> bool:
        ok = self.queue.resume(key)
        self.monitor.wake()
        return ok

    # -- submission ----------------------------------------------------------------------
    def submit_jobs(self, jobs: list[_Job], opts: dict[str, Any]) -> None:
        """Look the jobs up in the cache; submit those that must run; attach futures."""
        force, retry = opts.get("force", False), opts.get("retry", True)
        deps = sorted({f.key for f in opts.get("after", ())})
        after_dirs = sorted({str(f._core.jobs_dir / f.key) for f in opts.get("after", ())})
        unique: dict[str, _Job] = {}
        for j in jobs:
            unique.setdefault(j.key, j)
            # Watch before any record is written, so no change can slip past the monitor.
            self._watch_futures(j.key, j.futures)
        known = self.store.get_many(unique)
        known.update(self.recover_records({k: known.get(k) for k in unique
                                           if recovery.worth_a_look(known.get(k))}))
        to_write: dict[str, _Job] = {}
        for key, j in unique.items():
            rec = known.get(key)
            if rec is None:
                to_write[key] = j
            elif rec.state.finished:
                if force or (retry and rec.state is not JobState.COMPLETED):
                    to_write[key] = j
                elif rec.state is JobState.COMPLETED and not self._result_present(rec):
                    log.warning("result of %s is missing from the cache; running it again", key)
                    to_write[key] = j
        # Files are staged privately, then renamed into place inside the write transaction,
        # so two clients submitting the same key never write into one job directory.
        tag = uuid.uuid4().hex[:12]
        staged: list[str] = []
        try:
            for j in to_write.values():
                self.check_workdir(j.res)
            logs = self._prologues(to_write, opts.get("prologue"))
            now = time.time()
            records = {key: self._new_record(j, deps, opts, now) for key, j in to_write.items()}
            for key, j in to_write.items():
                staged.append(str(self.jobs_dir / f".new-{tag}-{key}"))
                self._write_files(j, staged[-1], after_dirs, opts.get("aux_scripts"))
                self.transport.write_bytes(posixpath.join(staged[-1], RECORD),
                                           recovery.record_file(records[key], self.key),
                                           atomic=False)
                if key in logs:
                    self.transport.write_bytes(os.path.join(staged[-1], hooks.PROLOGUE_LOG),
                                               logs[key], atomic=False)
            if to_write:
                self._insert(records, known, tag)
        except BaseException:
            for j in jobs:
                self._unwatch_futures(j.key, j.futures)
            raise
        finally:
            placed = self._placed.pop(tag, set())
            for path in staged:  # what was not renamed into place, and replaced directories
                if path not in placed and self.transport.exists(path):
                    self.transport.remove_tree(path)
            for old in self._replaced.pop(tag, []):
                self.transport.remove_tree(old)
        self.monitor.wake() if to_write else self.monitor.start()
        attached = [key for key in unique if key not in to_write]
        fresh = {k: known[k] for k in attached if known[k].state.finished}
        fresh.update(self.store.get_many(k for k in attached if k not in fresh))
        self.records_changed(fresh.values())

    def _prologues(self, jobs: dict[str, _Job], prologue: str | None) -> dict[str, bytes]:
        """Run the prologue of each job about to be submitted (once per distinct text);
        its log per key. A failure raises :class:`PrologueFailed` and nothing is submitted."""
        if not prologue:
            return {}
        ran: dict[str, bytes] = {}
        logs: dict[str, bytes] = {}
        for key, j in jobs.items():
            jobdir = str(self.jobs_dir / key)
            text = hooks.render(prologue, j.res, j.name, jobdir)
            if text not in ran:
                result, error = hooks.run_logged(
                    text, hooks.hook_env(key, j.name, jobdir, self.host))
                if result is None or not result.ok:
                    raise PrologueFailed(
                        f"the prologue of job {j.name} ({key}) "
                        f"{hooks.hook_failure('', result, error).strip()}; nothing was "
                        f"submitted. Fix the prologue (or what it needs) and submit again")
                ran[text] = hooks.log_text(result)
            logs[key] = ran[text]
        return logs

    def recover_records(self, records: dict[str, JobRecord | None]) -> dict[str, JobRecord]:
        """Records rebuilt from the job directories of ``records`` (by key: what the store
        holds, None where it holds nothing) where a directory knows better (see
        :mod:`hpcexec.recovery`); they are put in the store and returned by key."""
        if not records:
            return {}
        found = recovery.rebuild(self.transport, self.keyring,
                                 {key: str(self.jobs_dir / key) for key in records},
                                 self.backend.name, self.host)
        better = {k: r for k, r in found.items() if recovery.newer(r, records[k])}
        if not better:
            return {}
        out: dict[str, JobRecord] = {}
        with self.store.write() as tx:
            for key, rec in better.items():
                cur, before = tx.get(key), records[key]
                if (cur.rev if cur else None) == (before.rev if before else None):
                    out[key] = tx.put(rec)  # else changed meanwhile: that record stands
        if out:
            log.warning("%d job record(s) missing from the cache %s (or older there) were "
                        "rebuilt from their job directories; finished results are reused",
                        len(out), self.store.path)
        return out

    def _new_record(self, j: _Job, deps: list[str], opts: dict[str, Any],
                    now: float) -> JobRecord:
        """The record of a job about to be submitted."""
        extra: dict[str, Any] = {}  # kept in the record only when not the default
        if opts.get("array_limit"):
            extra["array_limit"] = opts["array_limit"]
        if opts.get("reuse_slots") is False:
            extra["reuse_slots"] = False
        if j.directives:
            extra[FILE_DIRECTIVES] = list(j.directives)
        jobdir = str(self.jobs_dir / j.key)
        epilogue = opts.get("epilogue")
        return JobRecord(
            key=j.key, backend=self.backend.name, host=self.host, kind=j.kind, jobdir=jobdir,
            state=JobState.HELD if opts.get("hold") else JobState.PENDING,
            name=j.name, submitted=now, cores=j.res.cores,
            resources={**j.res.to_dict(), **self.placed(j.res), "python": self.python,
                       **extra},
            deps=deps,
            epilogue=hooks.render(epilogue, j.res, j.name, jobdir) if epilogue else None)

    def _insert(self, records: dict[str, JobRecord], known: dict[str, JobRecord],
                tag: str) -> None:
        lost_race = 0
        with self.store.write() as tx:
            for key, new_rec in records.items():
                cur = tx.get(key)
                before = known.get(key)
                if cur is not None and (before is None or cur.rev != before.rev):
                    lost_race += 1  # another client submitted it meanwhile: attach to theirs
                    continue
                jobdir = str(self.jobs_dir / key)
                new = str(self.jobs_dir / f".new-{tag}-{key}")
                old = str(self.jobs_dir / f".old-{tag}-{key}")
                try:
                    if cur is not None or before is not None:
                        raise FileExistsError(jobdir)  # files of an earlier run, most likely
                    self.transport.rename(new, jobdir)
                except OSError:
                    if self.transport.exists(jobdir):  # an earlier run's files: set aside
                        self.transport.rename(jobdir, old)
                        self._replaced.setdefault(tag, []).append(old)
                    self.transport.rename(new, jobdir)
                self._placed.setdefault(tag, set()).add(new)
                tx.put(new_rec)
        if lost_race:
            log.info("%d job(s) were submitted by another client at the same time; attaching",
                     lost_race)

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
        return place(res.to_dict(), base=self.files_dir if self.remote else os.getcwd(),
                     expand=self.transport.expand_path, local=not self.remote)

    def job_layout(self, j: _Job) -> JobLayout:
        """Where a job about to be submitted will have its files."""
        return JobLayout.of(str(self.jobs_dir / j.key), {**j.res.to_dict(), **self.placed(j.res)})

    def check_workdir(self, res: Resources) -> None:
        """Refuse a job whose workdir on this machine does not exist or is no directory (on
        another host the job's start tells)."""
        if self.remote:
            return
        path = self.placed(res)["workdir"]
        if not os.path.isdir(path):
            why = "is not a directory" if os.path.exists(path) else "does not exist"
            raise ResourceError(f"the workdir {path} {why}: create it, or give the directory "
                                "the job should run in")

    def _result_present(self, rec: JobRecord) -> bool:
        return rec.kind == "shell" or self.transport.exists(self.layout(rec).result)

    def job_script(self, j: _Job, after: list[str]) -> str:
        """The text of a job's script (``job.sh`` in its directory)."""
        lay = self.job_layout(j)
        jobdir, workdir = lay.jobdir, lay.workdir
        parts = self.backend.script_parts(j.res, name=j.name, jobdir=jobdir, workdir=workdir,
                                          stdout=lay.stdout, stderr=lay.stderr)
        if j.kind == "shell":
            assert j.body is not None
            return render(parts, j.res, jobdir=jobdir, workdir=workdir, submit_host=self.host,
                          name=j.name, shell_body=j.body, after=after)
        command = (f"{shlex.quote(self.python)} -m hpcexec.runner {shlex.quote(jobdir)} "
                   f"{shlex.quote(self.key_file)}")
        return render(parts, j.res, jobdir=jobdir, workdir=workdir, submit_host=self.host,
                      name=j.name, command=command, after=after)

    def preview(self, j: _Job, after: list[JobFuture], hold: bool) -> str:
        """What submitting ``j`` on its own would give the scheduler (the local backend:
        run), rendered as the submission does it; nothing is written."""
        script = self.job_script(j, sorted({str(f._core.jobs_dir / f.key) for f in after}))
        ids = set()  # as if submitted now: dependencies not yet completed, by their ids
        for f in after:
            rec = f._core.store.get(f.key)
            if rec is not None and rec.job_id and rec.state is not JobState.COMPLETED:
                ids.add(rec.job_id)
        res = j.res.replace(**{**self.placed(j.res), "workdir": None})
        return self.queue.preview(script, res, j.name, self.job_layout(j), hold=hold,
                                  after=tuple(sorted(ids)), file_directives=j.directives)

    def _write_files(self, j: _Job, stage: str, after: list[str],
                     aux: dict[str, str] | None) -> None:
        """Write a job's payload, script and other files into ``stage`` (renamed into place
        later)."""
        jobdir = str(self.jobs_dir / j.key)
        staged = JobLayout(stage, stage)  # the job directory's files, before the rename
        self.transport.make_dir(stage)
        if j.kind != "shell":
            assert j.file_bytes is not None
            self.transport.write_bytes(staged.payload,
                                       integrity.seal(self.key, j.file_bytes), atomic=False)
        files = {**{name: hooks.render(text, j.res, j.name, jobdir).encode()
                    for name, text in (aux or {}).items()}, **j.files}
        for name, data in files.items():
            self.transport.write_bytes(staged.file(name), data, atomic=False)
        self.transport.write_bytes(staged.script,
                                   self.job_script(j, after).encode(), atomic=False)

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        with self._lock:
            self.closed = True
        if cancel_futures:
            for f in self.all_futures():
                if not f.running():
                    f.cancel()
        if wait:
            concurrent.futures.wait(self.all_futures())
            if self._epilogue_pool is not None:
                self._epilogue_pool.shutdown(wait=True)
            self.monitor.stop(wait=True)
            self.store.close()
            self.transport.close()
        else:
            self.monitor.close_when_idle()


class _Unreachable(TransportError):
    """A finished job's files could not be read (a dropped connection, say)."""


def _result_or_cancel(f: JobFuture, timeout: float | None) -> Any:
    """``f``'s result; cancelled when that fails (a timeout), as the stdlib's ``map`` does."""
    try:
        return f.result(timeout)
    finally:
        f.cancel()


def _set(f: JobFuture, *, result: Any = None, exc: BaseException | None = None) -> None:
    try:
        if f._state == concurrent.futures._base.PENDING:
            if not f.set_running_or_notify_cancel():
                return
        if exc is not None:
            f.set_exception(exc)
        else:
            f.set_result(result)
    except concurrent.futures.InvalidStateError:  # cancelled or set by a racing pass
        pass


_DIRECTIVE_RE = re.compile(r"^#(\$|[A-Z]{2,})\s")


def file_directives(text: str) -> tuple[str, ...]:
    """The scheduler directives (``#SBATCH``, ``#$``, ``#PBS``, ``#BSUB``, ...) in a job
    file's leading block of comments and blank lines, where schedulers read them."""
    out = []
    for line in text.splitlines()[1 if text.startswith("#!") else 0:]:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        if _DIRECTIVE_RE.match(stripped):
            out.append(stripped)
    return tuple(out)


def file_interpreter(text: str) -> str:
    """The command line a job file's ``#!`` names (``/bin/bash`` without one)."""
    first = text.split("\n", 1)[0]
    if first.startswith("#!") and first[2:].strip():
        return " ".join(shlex.quote(w) for w in first[2:].split())
    return "/bin/bash"


def _safe_name(text: str) -> str:
    name = re.sub(r"[^\w.+-]+", "_", text).strip("_")
    return name[:64] or "job"


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
        profile: a named profile from ``hpcexec.toml`` or ``~/.config/hpcexec/config.toml``
            (see :mod:`hpcexec.config`) giving any of the settings above and default
            resources; arguments given here override it. Default: ``$HPCEXEC_PROFILE``, else
            the files' ``default_profile``, else none; ``""`` selects none.
        **resources: default resources and job options for every job (see :meth:`options`).

    Jobs outlive the client: running the same script again reattaches to running jobs and
    returns finished results from the cache without submitting them again.
    """

    def __init__(self, backend: str | None = None, *,
                 cache_dir: str | os.PathLike | None = None,
                 host: str | None = None, python: str | None = None,
                 remote_dir: str | None = None, ssh_key: str | None = None,
                 known_hosts: str | None = None, trust_on_first_use: bool | None = None,
                 poll_interval: float | None = None, coalesce: float | None = None,
                 calls_per_second: float | None = None, profile: str | None = None,
                 **resources: Any) -> None:
        # None means "not given": the profile's value, else the default (hpcexec.config).
        s = resolve_settings(profile, dict(
            backend=backend, cache_dir=cache_dir, host=host, python=python,
            remote_dir=remote_dir, ssh_key=ssh_key, known_hosts=known_hosts,
            trust_on_first_use=trust_on_first_use, poll_interval=poll_interval,
            coalesce=coalesce, calls_per_second=calls_per_second))
        res, opts = _split_options({**{k: v.value for k, v in s.resources.items()},
                                    **resources})
        self._res = Resources.create(**res)
        self._opts = _job_options(opts)
        self._core = _Core(s["backend"], s["cache_dir"], s["host"], s["python"],
                           s["poll_interval"], s["coalesce"], s["calls_per_second"],
                           SSHOptions(s["remote_dir"], s["ssh_key"], s["known_hosts"],
                                      s["trust_on_first_use"]))
        self._core.backend.check(self._res)

    # -- views ---------------------------------------------------------------------------
    def options(self, **resources_and_options: Any) -> Executor:
        """An executor sharing this one's cache and monitor, with other resources or job
        options: ``name``, ``key`` (explicit cache key), ``force`` (run even if cached),
        ``retry`` (run a cached failure again, default True), ``hold``, ``after`` (futures
        that must complete first), ``array_limit`` (most elements of an array job running at
        once, on schedulers), ``reuse_slots`` (default True: an array element that has
        finished its own task may run tasks of the same array that have not started, in a
        fresh forked process each, saving a slot and a Python start-up per task; False gives
        every task its own element), ``prologue`` and ``epilogue`` (shell text run on this
        machine before the job is submitted and once after it ended) and ``aux_scripts``
        (``{"name.sh": text}`` written beside the job script); see :mod:`hpcexec.hooks`."""
        res, opts = _split_options(resources_and_options)
        view = object.__new__(Executor)
        view._core = self._core
        view._res = self._res.replace(**res)
        view._opts = _job_options({**self._opts, **opts})
        view._core.backend.check(view._res)
        return view

    @property
    def resources(self) -> Resources:
        return self._res

    @property
    def cache_dir(self) -> Path:
        return self._core.cache_dir

    @property
    def store(self) -> Store:
        return self._core.store

    # -- submission ----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._core.closed:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _key(self, *parts: str | bytes) -> str:
        after = sorted(f.key for f in self._opts.get("after", ()))
        if after:  # the same work after other jobs is other work (futures in arguments are
            parts = (*parts, "after:" + ",".join(after))  # in the payload already)
        aux = self._opts.get("aux_scripts")
        if aux:  # the job may run them (a prologue or an epilogue runs outside the job)
            parts = (*parts, "aux:" + json.dumps(aux, sort_keys=True))
        return pl.cache_key(*parts, self._res.canonical(), self._core.backend.name, self._core.host)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> JobFuture:
        """Run ``fn(*args, **kwargs)`` as a job; its future holds the return value."""
        self._check_open()
        job, deps = self._call_job(fn, args, kwargs)
        job.futures = [JobFuture(self._core, job.key)]
        self._core.submit_jobs([job], self._with_deps(deps))
        return job.futures[0]

    def _call_job(self, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]
                  ) -> tuple[_Job, list[JobFuture]]:
        calls, deps = _extract_futures([(args, kwargs)])
        file_bytes, body = pl.dumps_payload(fn, calls, kind="call", sys_path=self._core.sys_path,
                                            by_value=self._core.by_value(),
                                            refs=bool(deps))
        key = self._opts.get("key") or self._key("call", body)
        name = self._res.name or _safe_name(getattr(fn, "__name__", "call"))
        return _Job("call", key, name, self._res, 1, file_bytes=file_bytes), deps

    def _with_deps(self, deps: list[JobFuture]) -> dict[str, Any]:
        if not deps:
            return self._opts
        return {**self._opts, "after": [*self._opts.get("after", ()), *deps]}

    def submit_shell(self, body: str, *, check: bool = True) -> JobFuture:
        """Run a shell body as a job. The future's result is a :class:`ShellResult`; a
        non-zero exit raises :class:`JobFailed` when ``check``. ``{placeholders}`` such as
        ``{threads}`` or ``{mem}`` are filled from the resources."""
        self._check_open()
        job = self._shell_job(body, check)
        job.futures = [JobFuture(self._core, job.key, check=check)]
        self._core.submit_jobs([job], self._opts)
        return job.futures[0]

    def _shell_job(self, body: str, check: bool) -> _Job:
        if not isinstance(body, str) or not body.strip():
            raise ResourceError("submit_shell needs a non-empty shell body string")
        if "\0" in body:
            raise ResourceError("the shell body contains a NUL byte")
        key = self._opts.get("key") or self._key("shell", body)
        return _Job("shell", key, self._res.name or "shell", self._res, 1, body=body,
                    check=check)

    def submit_file(self, path: str | os.PathLike, *, check: bool = True,
                    **resources: Any) -> JobFuture:
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
        self._check_open()
        view = self.options(**resources) if resources else self
        job = view._file_job(path, check)
        job.futures = [JobFuture(view._core, job.key, check=check)]
        view._core.submit_jobs([job], view._opts)
        return job.futures[0]

    def _file_job(self, path: str | os.PathLike, check: bool) -> _Job:
        try:
            data = Path(path).expanduser().read_bytes()
        except OSError as e:
            raise ResourceError(f"cannot read the job file {path}: {e.strerror or e}") from e
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise ResourceError(f"the job file {path} is not UTF-8 text") from None
        if "\0" in text or not text.strip():
            raise ResourceError(f"the job file {path} is empty or holds NUL bytes")
        copy = Path(path).name
        copy = copy if copy not in hooks.RESERVED and not copy.startswith(".") else f"user_{copy}"
        key = self._opts.get("key") or self._key("file", data)
        jobdir = str(self._core.jobs_dir / key)
        body = f"{file_interpreter(text)} {shlex.quote(os.path.join(jobdir, copy))}"
        name = self._res.name or _safe_name(Path(path).stem)
        return _Job("shell", key, name, self._res, 1, body=body, check=check,
                    files={copy: data}, directives=file_directives(text))

    def job_script(self, fn_or_body: Callable[..., Any] | str, /, *args: Any,
                   **resources: Any) -> str:
        """The exact script that submitting ``fn_or_body`` (a callable with ``args``, or a
        shell body) with these resources and job options would give the scheduler (on the
        local backend: run), writing and submitting nothing. On a scheduler it is the job
        submitted on its own: coalesced into an array, each element runs the same script
        body under the array's directives. Pass keyword arguments of a callable with
        :func:`functools.partial`."""
        view = self.options(**resources) if resources else self
        after = list(view._opts.get("after", ()))
        if isinstance(fn_or_body, str):
            if args:
                raise ResourceError("a shell body takes no arguments: put them in the body")
            job = view._shell_job(fn_or_body, True)
        else:
            job, deps = view._call_job(fn_or_body, args, {})
            after += deps
        return view._core.preview(job, after, bool(view._opts.get("hold")))

    def file_script(self, path: str | os.PathLike, **resources: Any) -> str:
        """What :meth:`submit_file` would give the scheduler for ``path`` (see
        :meth:`job_script`), writing and submitting nothing."""
        view = self.options(**resources) if resources else self
        return view._core.preview(view._file_job(path, True), list(view._opts.get("after", ())),
                                  bool(view._opts.get("hold")))

    def default_chunksize(self, n: int) -> int:
        """Calls per job for a ``map`` of ``n`` calls when ``chunksize`` is not given: on the
        local backend, one job per slot (cores // cores per job), so process start-up is
        paid once per slot. Give ``chunksize`` for uneven work or finer progress."""
        backend = self._core.backend
        if not isinstance(backend, LocalBackend):
            return 1  # a scheduler gets one array element per call
        slots = max(1, backend.total_cores // self._res.cores)
        return max(1, math.ceil(n / slots))

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int | None = None, progress: bool = False) -> Iterator[Any]:
        """Like :meth:`concurrent.futures.Executor.map`: results in order, stopping at the
        shortest iterable, ``TimeoutError`` if a result is not ready ``timeout`` seconds after
        the call. ``chunksize`` calls share one job (default: :meth:`default_chunksize`)."""
        self._check_open()
        if timeout is not None:
            end_time = timeout + time.monotonic()
        if self._opts.get("key"):
            raise ResourceError("job option 'key' names one job; map makes many: drop key=")
        calls, deps = _extract_futures([(args, {}) for args in zip(*iterables)])
        if chunksize is None:
            chunksize = self.default_chunksize(len(calls))
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        base = self._res.name or _safe_name(getattr(fn, "__name__", "map"))
        jobs = []
        fn_checked = False
        for start in range(0, len(calls), chunksize):
            part = calls[start : start + chunksize]
            kind = "chunk" if chunksize > 1 else "call"
            file_bytes, body = pl.dumps_payload(fn, part, kind=kind, sys_path=self._core.sys_path,
                                                by_value=self._core.by_value(),
                                                refs=bool(deps))
            fn_checked = True
            key = self._key(kind, body)
            name = base if chunksize == 1 else f"{base}[{start}:{start + len(part)}]"
            job = _Job(kind, key, name, self._res, len(part), file_bytes=file_bytes)
            job.futures = [JobFuture(self._core, key, i if kind == "chunk" else None)
                           for i in range(len(part))]
            jobs.append(job)
        if not fn_checked and not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        self._core.submit_jobs(jobs, self._with_deps(deps))
        fs = [f for j in jobs for f in j.futures]
        bar = None
        if progress:
            from .progress import attach_bar

            bar = attach_bar(fs, desc=base)

        def result_iterator() -> Iterator[Any]:
            try:
                fs.reverse()
                while fs:
                    yield _result_or_cancel(fs.pop(), None if timeout is None
                                            else end_time - time.monotonic())
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
        self._core.shutdown(wait, cancel_futures)

    # -- jobs by key -----------------------------------------------------------------------
    def attach(self, key: str) -> JobFuture:
        """A future for the job record ``key`` already in the cache (submitted by an earlier
        run, another client or the command line). It follows the record like the future
        ``submit`` returned: ``result()``, ``terminate()``, ``release()``, ``hold()``,
        ``stdout()``, ``info()``. Raises :class:`UnknownJob` if there is no such record and
        :class:`BackendError` if it belongs to another backend or host than this executor
        (open one with that ``backend`` and ``host``)."""
        self._check_open()
        rec = self._core.store.get(key)
        if rec is None and _KEY_RE.match(key):  # a lost cache: its job directory may tell
            rec = self._core.recover_records({key: None}).get(key)
        if rec is None:
            raise UnknownJob(f"no job record {key!r} in {self._core.store.path}: "
                             f"`hpcexec jobs` lists the records")
        if (rec.backend, rec.host) != (self._core.backend.name, self._core.host):
            raise BackendError(f"job {key} belongs to backend {rec.backend!r} on {rec.host}, "
                               f"this executor to {self._core.backend.name!r} on "
                               f"{self._core.host}: open an Executor with "
                               f"backend={rec.backend!r} (and host=) to follow it")
        future = JobFuture(self._core, key)  # of a chunk job: its first call's value
        self._core._watch_futures(key, [future])  # before the look, so no change slips by
        self._core.monitor.start()
        self._core.records_changed([self._core.store.get(key) or rec])
        return future

    def refresh(self) -> bool:
        """Bring this executor's unfinished records up to date with one status pass (one
        batched scheduler query; on the local backend it also starts queued jobs that now
        fit). For tools that read records without waiting on futures; while futures wait,
        the monitor does this by itself. True if any record changed."""
        if self._core.watching():
            self._core.monitor.wake()
            return False
        return self._core.driver_poll()


def wait(fs: Iterable[concurrent.futures.Future], timeout: float | None = None,
         return_when: str = concurrent.futures.ALL_COMPLETED, *,
         progress: bool = False) -> concurrent.futures._base.DoneAndNotDoneFutures:
    """:func:`concurrent.futures.wait`, with an optional progress bar counting jobs per state."""
    fs = list(fs)
    if not progress:
        return concurrent.futures.wait(fs, timeout, return_when)
    from .progress import attach_bar

    bar = attach_bar(fs, desc="jobs")
    try:
        return concurrent.futures.wait(fs, timeout, return_when)
    finally:
        bar.close()


__all__ = ["Executor", "JobFuture", "ShellResult", "wait", "HpcexecError"]
