"""What a :class:`~hpcexec.future.JobFuture` may ask of its client (its
:class:`~hpcexec.future.JobControl`): its record, output and info, and cancel, terminate,
hold, release, suspend and resume of its job.

Ending a job is decided with :data:`hpcexec.interest.INTEREST`: only when no other live
future of this process wants it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Protocol

from .errors import JobFailed
from .future import JobFuture, JobInfo
from .gathering import Gathering
from .interest import INTEREST
from .outcomes import Outcomes
from .record import JobRecord
from .states import JobState
from .store import Store


class Controlled(Protocol):
    """The driver's job controls (the local queue or a scheduler's)."""

    def cancel(self, key: str) -> bool: ...
    def terminate(self, key: str) -> bool: ...
    def hurry(self) -> None: ...
    def hold(self, key: str) -> bool: ...
    def release(self, key: str) -> bool: ...
    def suspend(self, key: str) -> bool: ...
    def resume(self, key: str) -> bool: ...


class Controls:
    """The futures' interface to one session."""

    def __init__(
        self,
        store: Store,
        driver: Controlled,
        outcomes: Outcomes,
        jobs_dir: str,
        where: str,
        wake: Callable[[], None],
        gathering: Gathering,
    ) -> None:
        self.store = store
        self.gathering = gathering  # a future's job may not be submitted yet: flush first
        self.driver = driver
        self.outcomes = outcomes
        self.jobs_dir = jobs_dir
        self.where = where  # this cache, for INTEREST
        self.wake = wake  # the monitor's

    def record(self, key: str) -> JobRecord | None:
        self.gathering.flush_for(key)
        return self.store.get(key)

    def wanted(self, key: str) -> None:
        """Someone waits for this job's result: if it still gathers for a shared submission,
        in this client or in the driver, submit it now (a lone ``submit`` then ``result()``
        never waits out a window)."""
        self.gathering.flush()
        rec = self.store.get(key)
        if (
            rec is not None
            and rec.job_id is None
            and rec.state in (JobState.PENDING, JobState.HELD)
        ):
            self.driver.hurry()
            self.wake()

    def job_dir(self, key: str) -> str:
        return posixpath.join(self.jobs_dir, key)

    def read_output(self, rec: JobRecord, stream: str) -> str:
        return self.outcomes.read_output(rec, stream)

    def info(self, key: str) -> JobInfo:
        rec = self.record(key)
        if rec is None:
            raise KeyError(f"no job record {key} in {self.store.path}")
        return self.outcomes.info(rec)

    def cancel(self, future: JobFuture) -> bool:
        """Whether ``future`` may be cancelled: its job has not started. The job itself is
        cancelled only when no other live future of this process wants it (identical
        calls, a chunk's other calls, another Executor's or attach's futures share it)."""
        key = future.key

        def cancel_job() -> bool:
            if self.driver.cancel(key):
                return True
            now = self.store.get(key)  # cancelled meanwhile by someone else: fine too
            return now is not None and now.state is JobState.CANCELLED

        rec = self.record(key)
        if rec is None or rec.state.started:
            return False
        return INTEREST.withdraw(self.where, key, future, cancel_job) is not False

    def terminate(self, future: JobFuture) -> bool:
        """End ``future``'s job whether it waits or runs, unless another live future of
        this process still wants it: then only ``future`` fails, at once, and the job goes
        on."""
        key = future.key
        self.gathering.flush_for(key)
        ended = INTEREST.withdraw(self.where, key, future, lambda: self.driver.terminate(key))
        if ended is None:
            rec = self.store.get(key)
            future.settle(
                exc=JobFailed(
                    f"job {key} was terminated for this future only: other futures of this "
                    f"process still want it, so it goes on for them",
                    state=JobState.CANCELLED,
                    reason="terminated for this future; the job goes on for other futures",
                    key=key,
                    job_id=rec.job_id if rec else None,
                )
            )
            return True
        self.wake()
        return ended

    def hold(self, key: str) -> bool:
        self.gathering.flush_for(key)
        ok = self.driver.hold(key)
        self.wake()
        return ok

    def release(self, key: str) -> bool:
        self.gathering.flush_for(key)
        ok = self.driver.release(key)
        self.wake()
        return ok

    def suspend(self, key: str) -> bool:
        self.gathering.flush_for(key)
        return self.driver.suspend(key)

    def resume(self, key: str) -> bool:
        self.gathering.flush_for(key)
        ok = self.driver.resume(key)
        self.wake()
        return ok
