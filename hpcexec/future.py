"""JobFuture: a real :class:`concurrent.futures.Future` that is a view of a job record."""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .states import JobState

if TYPE_CHECKING:
    from .record import JobRecord


@dataclass(frozen=True)
class ShellResult:
    """What a shell job left: its exit code and the text of its output files."""

    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class JobInfo:
    """How a job ran, from its record, the usage its runner wrote, and the scheduler's
    accounting where there is one. Fields are None where nothing reported them."""

    job_id: str | None
    state: JobState
    exit_code: int | None
    signal: int | None
    was_aborted: bool  # ended without running to its end: cancelled, timed out, killed, lost
    reason: str | None
    wallclock: float | None  # seconds
    cpu_seconds: float | None
    max_rss_mb: float | None
    nodelist: str | None
    attempts: tuple[str | None, ...] = ()  # the job ids of its earlier runs (retries)
    requeues: int = 0  # times it resumed from its checkpoint (requeue)


class JobControl(Protocol):
    """The one interface a :class:`JobFuture` talks to (its client's
    :class:`hpcexec.control.Controls`)."""

    def record(self, key: str) -> JobRecord | None: ...
    def wanted(self, key: str) -> None: ...
    def job_dir(self, key: str) -> str: ...
    def read_output(self, rec: JobRecord, stream: str) -> str: ...
    def cancel(self, future: JobFuture) -> bool: ...
    def terminate(self, future: JobFuture) -> bool: ...
    def info(self, key: str) -> JobInfo: ...
    def suspend(self, key: str) -> bool: ...
    def resume(self, key: str) -> bool: ...
    def release(self, key: str) -> bool: ...
    def hold(self, key: str) -> bool: ...


class JobFuture(concurrent.futures.Future):
    """The future of one call (or one element of a chunked ``map``) run as a job.

    The stdlib methods keep their meaning: ``cancel()`` succeeds only for a job that has not
    started (and then cancels it in the scheduler too, unless another live future of this
    process shares the job); use :meth:`terminate` to end a running job.
    """

    def __init__(
        self, control: JobControl, key: str, index: int | None = None, *, check: bool = True
    ) -> None:
        super().__init__()
        self._control = control
        self.key = key
        self._index = index  # position inside a chunk job, None for a whole job
        self._check = check
        self._seen_state = JobState.PENDING  # last state the monitor saw, for progress
        self._ranks: list[Any] | None = None  # every task's value, for a multi-task job
        # True while cancel() asks the job to be cancelled: the monitor, which may read the
        # record that cancel has just written, waits for its answer before moving this future.
        self._cancelling = False

    def __repr__(self) -> str:
        return (
            f"<JobFuture key={self.key} state={self._seen_state.value} {super().__repr__()[1:-1]}>"
        )

    @property
    def index(self) -> int | None:
        """This call's position inside a chunk job; None for a whole job."""
        return self._index

    @property
    def check(self) -> bool:
        """Whether a shell job's non-zero exit fails this future."""
        return self._check

    @property
    def seen_state(self) -> JobState:
        """The job's state when the monitor last looked (no store read)."""
        return self._seen_state

    @property
    def jobdir(self) -> str:
        """The job's directory (where its runner and dependants find its files)."""
        return self._control.job_dir(self.key)

    def note_state(self, state: JobState) -> None:
        """Record the state the monitor saw; moves a pending future to running once the
        job has started (called by the monitor's thread only)."""
        self._seen_state = state
        if not state.started:
            return
        with self._condition:
            self._wait_for_cancel()
            if self._state == concurrent.futures._base.PENDING:
                self.set_running_or_notify_cancel()

    def _wait_for_cancel(self) -> None:
        """Wait (holding ``_condition``) until no cancel() is deciding."""
        while self._cancelling:
            self._condition.wait()

    def settle(
        self, result: Any = None, exc: BaseException | None = None, *, ranks: list | None = None
    ) -> None:
        """Complete the future with ``result`` or ``exc`` (``ranks``: every task's value, for
        a multi-task job); a no-op when it was cancelled or completed meanwhile (by a racing
        pass)."""
        with self._condition:
            self._wait_for_cancel()
            if (
                self._state == concurrent.futures._base.PENDING
                and not self.set_running_or_notify_cancel()
            ):
                return
            if ranks is not None and not self.done():
                self._ranks = list(ranks)
        try:
            if exc is not None:
                self.set_exception(exc)
            else:
                self.set_result(result)
        except concurrent.futures.InvalidStateError:
            pass

    def result(self, timeout: float | None = None) -> Any:
        """The job's value (see :class:`concurrent.futures.Future`); asking for it submits
        the job at once if it still gathers for a shared submission."""
        self.hurry()
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """As :meth:`result`, for the exception."""
        self.hurry()
        return super().exception(timeout)

    def hurry(self) -> None:
        """Submit this job now if it still gathers with others for one submission (``result``,
        ``exception`` and :func:`hpcexec.wait` do so: whoever waits never waits out the
        gathering window)."""
        if not self.done():
            self._control.wanted(self.key)

    def results(self, timeout: float | None = None) -> list[Any]:
        """Every task's value, in rank order, once every task ended: a callable of a job of
        ``nodes x ppn`` tasks runs in each (:func:`hpcexec.task` says which); ``[result()]``
        for a job of one task. Raises as :meth:`result` does: the lowest failing rank's
        exception, its rank in ``task_rank``."""
        value = self.result(timeout)
        return [value] if self._ranks is None else list(self._ranks)

    @property
    def record(self) -> JobRecord:
        """The job record as stored now."""
        rec = self._control.record(self.key)
        if rec is None:
            raise KeyError(f"the record {self.key} was deleted from the cache")
        return rec

    @property
    def job_id(self) -> str | None:
        """The scheduler's id for the job (``pid:start`` on the local backend)."""
        return self.record.job_id

    @property
    def state(self) -> JobState:
        """The job's state as stored now."""
        return self.record.state

    def stdout(self) -> str:
        """The text the job wrote to standard output so far."""
        return self._control.read_output(self.record, "stdout")

    def stderr(self) -> str:
        """The text the job wrote to standard error so far."""
        return self._control.read_output(self.record, "stderr")

    def cancel(self) -> bool:
        with self._condition:
            if self._state != concurrent.futures._base.PENDING or self._cancelling:
                return self.cancelled()
            self._cancelling = True
        ok = False
        try:
            ok = self._control.cancel(self)  # no lock held: it runs scheduler commands
        finally:
            with self._condition:
                self._cancelling = False
                ok = ok and super().cancel()
                self._condition.notify_all()
        if ok:  # the job is cancelled in the scheduler too: waiters may count it done now
            self.set_running_or_notify_cancel()
        return ok

    def terminate(self) -> bool:
        """End the job whether it waits or runs (its process group gets SIGTERM). The
        future then fails with :class:`~hpcexec.JobFailed` in state ``cancelled``. A job
        another live future of this process shares goes on for it: only this future fails."""
        if self.done():
            return False
        return self._control.terminate(self)

    def info(self) -> JobInfo:
        """Exit status, signal, whether it was aborted, wallclock, CPU time, max RSS, nodes."""
        return self._control.info(self.key)

    def suspend(self) -> bool:
        """Suspend a running job (SIGSTOP locally; the scheduler's suspend elsewhere)."""
        return self._control.suspend(self.key)

    def resume(self) -> bool:
        """Let a suspended job go on."""
        return self._control.resume(self.key)

    def release(self) -> bool:
        """Let a held job (submitted with ``hold=True``, or held by :meth:`hold`) start."""
        return self._control.release(self.key)

    def hold(self) -> bool:
        """Keep a job that has not started from starting until :meth:`release` (the
        scheduler's hold: ``scontrol hold``, ``qhold``, ``bstop``; on the local backend it
        stays queued). False if it has started or ended."""
        if self.done():
            return False
        return self._control.hold(self.key)
