"""The driver interface: what the session and the monitor ask of a queue of jobs, and the
rules every queue follows, written once.

Two drivers implement it: the local queue (:mod:`hpcexec.localqueue`), which starts and
signals processes itself, and the scheduler driver (:mod:`hpcexec.schedqueue`), which asks a
batch scheduler through its backend. The session holds one as ``queue`` and calls only what
is declared here; the monitor calls :meth:`Driver.poll` once a pass.

The rules they share:

* a job whose dependency failed, was cancelled, or left the cache never runs: it is cancelled
  with the reason (:meth:`Driver.dependencies`);
* a queued job (:data:`QUEUED`) that is cancelled ends cancelled with the reason, and its
  end time (:func:`cancelled`);
* :meth:`Driver.terminate` of a queued job cancels it; of a running one, it marks the record
  :data:`TERMINATED_REASON` first, then stops the job, so its end reads "terminated on
  request" (:func:`terminated`);
* an exit code of ``128 + n`` means the job was killed by signal ``n``
  (:func:`hpcexec.jobfiles.signal_of`, described by :func:`hpcexec.jobfiles.killed_by`).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .states import JobState

if TYPE_CHECKING:
    from .backends.base import JobStatus
    from .layout import JobLayout
    from .record import JobRecord
    from .resources import Resources
    from .store import Store
    from .store_queries import Txn
    from .transport.base import Transport

TERMINATED_REASON = "terminated on request"
NEVER_RAN = "this job never ran"
NOT_STARTED = "cancelled before it started"
QUEUED = (JobState.PENDING, JobState.HELD)  # not started: what cancel and hold apply to


def terminated(rec: JobRecord) -> bool:
    """Whether ``rec`` was ended by :meth:`Driver.terminate`: its end is then reported as
    cancelled on request (by the local queue, which sent the signal itself, whatever the
    exit code; by the scheduler driver where the scheduler says it was cancelled)."""
    return rec.reason == TERMINATED_REASON


def cancelled(tx: Txn, key: str, reason: str = NOT_STARTED) -> None:
    """Record that a job that never started was cancelled, and why."""
    tx.update(key, state=JobState.CANCELLED, finished=time.time(), reason=reason)


def dependency_failed(dep: str, found: JobRecord | None) -> str | None:
    """Why a job can never run because of its dependency ``dep`` (``found``: its record, None
    if it is not in the cache), or None if that dependency may still complete."""
    if found is None:
        return f"dependency {dep} is not in the cache; {NEVER_RAN}"
    if found.state.finished and found.state is not JobState.COMPLETED:
        return f"dependency {dep} ended {found.state.value}; {NEVER_RAN}"
    return None


class Driver(abc.ABC):
    """Submits, watches and controls the jobs of one backend on one host. Each control
    method returns False where the job is not in a state it applies to."""

    store: Store
    transport: Transport
    host: str

    @property
    def wake_in(self) -> float | None:
        """Seconds until the driver wants to be polled again whatever happens (None: no
        wish)."""
        return None

    # -- one pass ------------------------------------------------------------------------
    @abc.abstractmethod
    def poll(self) -> bool:
        """Submit or start what waits, and bring records up to date. True if anything
        changed."""

    def hurry(self) -> None:  # noqa: B027 - optional: the local queue starts jobs at once
        """A caller waits for a job's result: submit what is gathering for a shared
        submission now."""

    def expect(self, count: int) -> None:  # noqa: B027 - optional: nothing to ask ahead
        """``count`` jobs are about to be written (before their files are staged): ask now
        what their submission will need."""

    def wait_fds(self) -> list[int]:
        """File descriptors that become readable when a job ends (the monitor wakes on
        them); none by default."""
        return []

    def close(self) -> None:  # noqa: B027 - optional: most drivers hold nothing
        """Release what the driver holds (the monitor stopped)."""

    def accounting(self, rec: JobRecord) -> JobStatus | None:
        """What the scheduler's accounting says of a finished job (None: nothing)."""
        return None

    def preview(
        self,
        script: str,
        res: Resources,
        name: str,
        lay: JobLayout,
        *,
        hold: bool,
        after: tuple[str, ...],
        file_directives: Sequence[str],
    ) -> str:
        """What submitting one job would hand over, rendered as the submission does it: by
        default the job script itself (``after``: ids of the dependencies not completed)."""
        return script

    # -- control -------------------------------------------------------------------------
    @abc.abstractmethod
    def cancel(self, key: str) -> bool:
        """Cancel a job that has not started."""

    def terminate(self, key: str) -> bool:
        """End a job: cancel it if it has not started, else mark it terminated on request
        and stop it."""
        if self.cancel(key):
            return True
        with self.store.write() as tx:
            rec = tx.get(key)
            if rec is None or rec.state.finished or not rec.job_id:
                return False
            tx.update(key, reason=TERMINATED_REASON)
        return self._stop(rec)

    @abc.abstractmethod
    def _stop(self, rec: JobRecord) -> bool:
        """Stop a started job (``rec`` has a job id): the second half of :meth:`terminate`."""

    @abc.abstractmethod
    def hold(self, key: str) -> bool:
        """Keep a queued job from starting until :meth:`release`."""

    @abc.abstractmethod
    def release(self, key: str) -> bool:
        """Let a held job start."""

    @abc.abstractmethod
    def suspend(self, key: str) -> bool:
        """Pause a running job; :meth:`resume` continues it."""

    @abc.abstractmethod
    def resume(self, key: str) -> bool:
        """Continue a suspended job."""

    # -- the dependency rule -------------------------------------------------------------
    def dependencies(self, rec: JobRecord, tx: Txn | None = None) -> list[JobRecord] | None:
        """The dependencies of ``rec`` not completed yet (empty: it may start), read inside
        ``tx`` if given; None where one failed or left the cache: ``rec`` is then cancelled
        with the reason (in ``tx``, else in a write of its own) and never runs."""
        reader = tx if tx is not None else self.store
        waiting = []
        for dep in rec.deps:
            found = reader.get(dep)
            why = dependency_failed(dep, found)
            if why is not None:
                if tx is not None:
                    cancelled(tx, rec.key, why)
                else:
                    with self.store.write() as w:
                        cancelled(w, rec.key, why)
                return None
            assert found is not None
            if found.state is not JobState.COMPLETED:
                waiting.append(found)
        return waiting
