"""A pool of long-lived worker jobs (:meth:`hpcexec.Executor.workers`).

::

    submit(fn) ──> inbox/<task> ──> a worker job claims it ──> tasks/<task>/result
                   (sealed payload)  (claimed/<task>@<worker>)   done/<task>
                        ▲                                            │
      TaskFuture <──────┴─────────── the pool's thread reads ────────┘

The workers are ordinary jobs of the executor (records, resources, logs), started as tasks
wait for them, up to the pool's size; each runs tasks one after another in its own process
(:mod:`hpcexec.workerloop` states the directory's protocol) and leaves when the pool is shut
down, after ``idle`` seconds with nothing to do, or before its time limit. A task itself has
no record: it is not cached and does not outlive this client. Files move through the
executor's transport, so a pool works the same over SSH.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import posixpath
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from . import integrity
from . import payload as pl
from .errors import JobFailed, ResourceError, WorkerLost
from .future import JobFuture
from .layout import EXITCODE, RESULT
from .workerloop import CLAIMED, CLOSED, DIRS, DONE, INBOX, TASKS, parse_claimed, serve

if TYPE_CHECKING:
    from .resources import Resources
    from .session import Session


class Jobs(Protocol):
    """What a pool needs of an :class:`~hpcexec.Executor` view: its workers are its jobs."""

    @property
    def session(self) -> Session: ...
    @property
    def resources(self) -> Resources: ...
    def options(self, **resources_and_options: Any) -> Jobs: ...
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> JobFuture: ...


log = logging.getLogger(__name__)

POOLS = "pools"  # beside the jobs' directory
LOOK_MIN = 0.005  # seconds between the pool's looks at its directory while tasks are out...
LOOK_MAX = 0.2  # ...growing to this while nothing changes
REMOTE_LOOK_MIN = 0.05  # the same over SSH, where each look is a few round trips


class TaskFuture(concurrent.futures.Future):
    """The future of one task of a :class:`WorkerPool`; ``key`` names the task."""

    def __init__(self, pool: WorkerPool, key: str) -> None:
        super().__init__()
        self.key = key
        self.pool = pool

    def cancel(self) -> bool:
        """Cancel the task if no worker has taken it yet."""
        if not self.done() and not self.pool.withdraw(self.key):
            return False
        return super().cancel()

    def terminate(self) -> bool:
        """Cancel the task, or end the worker job that runs it (its other tasks then fail
        with :class:`WorkerLost`; the pool starts workers again for those still waiting)."""
        return self.cancel() or self.pool.stop_worker_of(self.key)


class WorkerPool(concurrent.futures.Executor):
    """Up to ``workers`` jobs of ``executor`` that run submitted calls one after another;
    see :meth:`hpcexec.Executor.workers`."""

    def __init__(self, executor: Jobs, workers: int, idle: float) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ResourceError(f"workers takes a whole number >= 1, not {workers!r}")
        if isinstance(idle, bool) or not isinstance(idle, (int, float)) or idle <= 0:
            raise ResourceError(f"idle takes a positive number of seconds, not {idle!r}")
        self.session = s = executor.session
        self.size, self.idle = workers, float(idle)
        self.id = uuid.uuid4().hex[:12]
        self.dir = posixpath.join(s.files_dir, POOLS, self.id)
        self._jobs = executor if executor.resources.name else executor.options(name="worker")
        s.transport.stage([posixpath.dirname(self.dir), self.dir, *self._paths(DIRS)], {})
        self._cond = threading.Condition()
        self._tasks: dict[str, TaskFuture] = {}  # not done yet
        self._workers: dict[str, JobFuture] = {}
        self._numbers = itertools.count(1)
        self._failed: BaseException | None = None  # a worker failed before it took any task
        self._closed = False
        self._fresh = False
        self._scaling = threading.Lock()
        self._time_limit = self._jobs.resources.time
        self._thread: threading.Thread | None = None
        s.closers.append(self._close)

    def _paths(self, names: tuple[str, ...] | list[str]) -> list[str]:
        return [posixpath.join(self.dir, n) for n in names]

    # -- the caller's side ---------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskFuture:
        """Run ``fn(*args, **kwargs)`` in one of the pool's workers."""
        data, _ = pl.dumps_payload(
            fn,
            [(args, kwargs)],
            kind="call",
            sys_path=self.session.sys_path,
            by_value=self.session.by_value(),
        )
        with self._cond:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future = TaskFuture(self, f"{next(self._numbers):09d}")
            self._tasks[future.key] = future
            self._fresh = True  # the pool's thread looks again soon
            self._cond.notify_all()
        try:
            self.session.transport.write_bytes(
                posixpath.join(self.dir, INBOX, future.key), integrity.seal(self.session.key, data)
            )
        except BaseException:
            with self._cond:
                del self._tasks[future.key]
            raise
        self._scale()
        return future

    def withdraw(self, task: str) -> bool:
        """Take a task out of the inbox before a worker claims it (False if one did)."""
        try:
            self.session.transport.rename(
                posixpath.join(self.dir, INBOX, task), posixpath.join(self.dir, DONE, "." + task)
            )
        except OSError:
            return False
        with self._cond:
            self._tasks.pop(task, None)
            self._cond.notify_all()
        return True

    def stop_worker_of(self, task: str) -> bool:
        """End the worker job that runs ``task``; False if none does."""
        for name in self.session.transport.list_dir(posixpath.join(self.dir, CLAIMED)):
            claimed, worker = parse_claimed(name)
            if claimed == task and worker in self._workers:
                return self._workers[worker].terminate()
        return False

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more tasks; the workers leave once the tasks submitted have run (those
        no worker took yet are cancelled with ``cancel_futures``). ``wait`` waits for the
        tasks and the workers, then removes the pool's directory."""
        with self._cond:
            self._closed = True
            tasks = list(self._tasks.values())
            self._cond.notify_all()
        if cancel_futures:
            for f in tasks:
                f.cancel()
        self._ensure_thread()
        if self._close in self.session.closers:
            self.session.closers.remove(self._close)
        if not wait:
            return
        concurrent.futures.wait(tasks)
        thread = self._thread
        if thread is not None:
            thread.join()
        concurrent.futures.wait(list(self._workers.values()))
        self.session.transport.remove_tree(self.dir)

    def _close(self, wait: bool, cancel_futures: bool) -> None:
        self.shutdown(wait, cancel_futures=cancel_futures)

    # -- workers -----------------------------------------------------------------------------
    def _scale(self) -> None:
        """Start a worker when more tasks are out than workers alive, up to the pool's size
        (one caller at a time: the caller's thread and the pool's may both ask)."""
        self._ensure_thread()
        with self._scaling:
            with self._cond:
                alive = sum(1 for f in self._workers.values() if not f.done())
                start = not self._closed and alive < min(self.size, len(self._tasks))
                name = f"w{len(self._workers) + 1}"
            if start:
                try:
                    job = self._jobs.options(key=f"worker-{self.id}-{name}").submit(
                        serve, self.dir, name, self.session.key_file, self.idle, self._time_limit
                    )
                except Exception as e:  # noqa: BLE001 - the executor shut down, a prologue failed
                    with self._cond:  # the tasks no worker takes fail with it (_restart)
                        self._failed = e
                        self._cond.notify_all()
                    return
                if not alive:  # the first is wanted now; more go gathered, as one array
                    job.hurry()
                log.debug("worker pool %s started worker %s (job %s)", self.id, name, job.key)
                with self._cond:
                    self._workers[name] = job
                job.add_done_callback(self._worker_ended)

    def _worker_ended(self, job: concurrent.futures.Future) -> None:
        assert isinstance(job, JobFuture)
        error = job.exception()
        failed = error is not None and not self._claimed_by(job)
        with self._cond:
            if failed:
                self._failed = error
            self._cond.notify_all()

    def _claimed_by(self, job: JobFuture) -> bool:
        """Whether the worker ``job`` claimed any task (its record key names it)."""
        worker = job.key.rsplit("-", 1)[-1]
        names = self.session.transport.list_dir(posixpath.join(self.dir, CLAIMED))
        return any(parse_claimed(n)[1] == worker for n in names)

    # -- the pool's thread ------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._watch, name=f"hpcexec-pool-{self.id}", daemon=True
                )
                self._thread.start()

    def _watch(self) -> None:
        first = REMOTE_LOOK_MIN if self.session.remote else LOOK_MIN
        pause = first
        while True:
            with self._cond:
                if not self._tasks:
                    if self._closed:
                        break
                    self._cond.wait(LOOK_MAX)
                    continue
            try:
                changed = self._look()
            except Exception:  # a transport error: try again, the tasks stay out
                log.warning("worker pool %s: cannot read its directory", self.id, exc_info=True)
                changed = False
            with self._cond:
                pause = first if changed or self._fresh else min(LOOK_MAX, 2 * pause)
                self._fresh = False
                self._cond.wait(pause)
        self.session.transport.write_bytes(posixpath.join(self.dir, CLOSED), b"")

    def _look(self) -> bool:
        """Settle the tasks found done or lost; whether anything changed."""
        with self._cond:
            ended = {w for w, f in self._workers.items() if f.done()}
            out = dict(self._tasks)
        transport = self.session.transport
        done = [t for t in transport.list_dir(posixpath.join(self.dir, DONE)) if t in out]
        claimed = dict(map(parse_claimed, transport.list_dir(posixpath.join(self.dir, CLAIMED))))
        for task in claimed:
            if task in out and not out[task].running() and not out[task].done():
                out[task].set_running_or_notify_cancel()
        files = transport.read_files(
            [posixpath.join(self.dir, TASKS, t, n) for t in done for n in (RESULT, EXITCODE)]
        )
        for task in done:
            self._settle(task, files, out[task])
        lost = [t for t, w in claimed.items() if t in out and t not in done and w in ended]
        for task in lost:
            self._lose(task, claimed[task], out[task])
        waiting = [t for t in out if t not in claimed and t not in done]
        self._restart(waiting, out)
        return bool(done or lost)

    def _settle(self, task: str, files: dict[str, bytes | None], future: TaskFuture) -> None:
        where = posixpath.join(self.dir, TASKS, task, RESULT)
        sealed = files[where]
        try:
            if sealed is None:
                code = (files[posixpath.join(self.dir, TASKS, task, EXITCODE)] or b"").decode()
                raise JobFailed(
                    f"task {task} of worker pool {self.id} ended without a result: "
                    f"{code.partition(chr(10))[2].strip() or 'no reason given'}",
                    key=task,
                )
            data, _ = integrity.unseal(sealed, self.session.keyring, where)
            value = pl.outcome_value(pl.load_outcomes(data, where)[0], where)
        except BaseException as e:  # noqa: BLE001 - the task's own exception is its outcome
            self._finish(future, error=e)
        else:
            self._finish(future, value=value)

    def _lose(self, task: str, worker: str, future: TaskFuture) -> None:
        job = self._workers[worker]
        self._finish(
            future,
            error=WorkerLost(
                f"task {task} of worker pool {self.id} was lost: its worker job {job.key} "
                f"ended while running it ({job.seen_state.value}); see `hpcexec show "
                f"{job.key}` for why, and give the workers more time or memory",
                key=task,
            ),
        )

    def _restart(self, waiting: list[str], out: dict[str, TaskFuture]) -> None:
        """Tasks no worker took while none is alive: start workers again, or fail them with
        the error of a worker that failed before it took any task (it would fail again)."""
        with self._cond:
            alive = any(not f.done() for f in self._workers.values())
            failed = self._failed
        if alive or not waiting:
            return
        if failed is None:
            self._scale()
            return
        for task in waiting:
            if self.withdraw(task) and out[task].set_running_or_notify_cancel():
                out[task].set_exception(failed)

    def _finish(
        self, future: TaskFuture, *, value: Any = None, error: BaseException | None = None
    ) -> None:
        with self._cond:
            self._tasks.pop(future.key, None)
            self._cond.notify_all()
        if future.done():
            return
        if not future.running():
            future.set_running_or_notify_cancel()
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
