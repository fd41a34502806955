"""The driver for batch schedulers: submits records, polls them, cancels them.

Submission is decoupled from ``submit()``: records are inserted unsubmitted, and each pass
of the monitor submits what has gathered (:mod:`hpcexec.schedsubmit`), then brings the
submitted records up to date (:mod:`hpcexec.schedstatus`). Every scheduler command goes
through the transport and a rate limit (:mod:`hpcexec.schedcommands`); this module holds the
control of single jobs (cancel, hold, release, suspend, resume).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence

from .backends.base import JobStatus, SchedulerBackend
from .driver import QUEUED, Driver, cancelled
from .errors import BackendError
from .layout import JobLayout
from .record import JobRecord
from .resources import Resources
from .schedcommands import SchedulerCommands
from .schedrecover import SUBMITTING
from .schedscript import single_body, single_spec, submission_script
from .schedstatus import StatusPoll
from .schedsubmit import Submitter
from .slots import CLAIMS
from .states import JobState
from .store import Store
from .transport.base import Transport

log = logging.getLogger(__name__)

# After a submission the status is asked for every EARLY_POLL s, then after EARLY_FRACTION of
# the time since (from 0.8 s on; a job's end is seen at most 25 % late), until EARLY_POLLS_FOR
# s have passed (the interval is 5 s by then); then the monitor's interval and back-off take
# over (one status command per pass, as always): about twenty commands in those seconds.
EARLY_POLL = 0.2
EARLY_FRACTION = 0.25
EARLY_POLLS_FOR = 20.0
# The exit-code files of the few jobs left active are also read between those commands,
# PEEKS times per status interval where the job files are on this machine's filesystem (at
# least PEEK_EVERY s apart: 50 times a second at first, every 0.5 s at the end), REMOTE_PEEKS
# times over SSH (each read is two round trips); one saying 0 has the status asked at once
# (:meth:`StatusPoll.peek`), not at the end of the interval.
PEEK_EVERY = 0.02
PEEKS = 10
REMOTE_PEEKS = 2
# A job whose exit-code file said 0 and that the scheduler lists as ending (SLURM's
# COMPLETING, a fraction of a second) is asked about again this soon (StatusPoll.completing).
REASK_EVERY = 0.05


class SchedulerQueue(Driver):
    """Submits, watches and controls the jobs of one scheduler backend on one host."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        backend: SchedulerBackend,
        cache_dir: str,
        *,
        window: float = 0.2,
        max_window: float = 2.0,
        calls_per_second: float = 10.0,
        max_queued: int | None = None,
        peeks: int = 0,
    ) -> None:
        """``peeks``: how many times per status interval the exit-code files of fresh jobs
        are read (:data:`PEEKS`, :data:`REMOTE_PEEKS`; 0 where the scheduler delivers a
        job's output only after it ended)."""
        self.store = store
        self.transport = transport
        self.backend = backend
        self.host = transport.host
        self.commands = SchedulerCommands(transport, backend, calls_per_second)
        self.calls = self.commands.calls  # command name -> times run
        self.status = StatusPoll(store, transport, backend, self.commands)
        self.submitter = Submitter(
            store,
            transport,
            backend,
            self.commands,
            os.path.join(cache_dir, "arrays"),
            self.dependencies,
            lambda: len(self.status.lingering),
            window=window,
            max_window=max_window,
            max_queued=max_queued,
        )
        self.peeks = peeks
        self._status_at = 0.0  # when the status command was last asked

    # -- one pass ----------------------------------------------------------------------------
    @property
    def wake_in(self) -> float | None:
        """Seconds until the next pass is wanted: when jobs gathering for one submission go,
        or, in the first seconds after a submission, soon (a short job's end is seen
        about as soon as it comes, not a whole poll interval later); None: no wish."""
        soon = self.submitter.soon
        early = self._early_interval(time.time())
        if early is not None:
            if self.peeks and self.status.watched:
                early = max(PEEK_EVERY, early / self.peeks)
            soon = early if soon is None else min(soon, early)
        return soon

    def _early_interval(self, now: float) -> float | None:
        """The status command's interval in the first seconds after a submission (None:
        after them, where the monitor's own interval rules)."""
        since = self.submitter.last_submitted
        if since is None or now - since >= EARLY_POLLS_FOR:
            return None
        if self.status.completing:
            return REASK_EVERY
        return max(EARLY_POLL, EARLY_FRACTION * (now - since))

    def hurry(self) -> None:
        """A caller waits for a result: submit the jobs gathering now, not at the end of the
        window."""
        self.submitter.hurry.set()

    def expect(self, count: int) -> None:
        self.submitter.expect(count)

    def poll(self) -> bool:
        changed = self.submitter.submit_waiting()
        now = time.time()
        early = self._early_interval(now)
        due = changed or early is None or now - self._status_at >= early
        if self.peeks and not due and not self.status.peek():  # nor asked for by a peek
            return False
        self._status_at = now
        return self.status.refresh() or changed

    # -- control -----------------------------------------------------------------------------
    def cancel(self, key: str) -> bool:
        with self.store.write() as tx:
            rec = tx.get(key)
            if rec is None or rec.state not in QUEUED:
                return False
            if rec.job_id is None and not (rec.reason or "").startswith(SUBMITTING):
                cancelled(tx, key, "cancelled before it was submitted")
                return True
        if rec.job_id is None:
            return False
        array_dir = rec.resources.get("array_dir")
        if array_dir and rec.array_index is not None:
            # Claim it first, so no element of its array can start it from now on.
            if not self.transport.create_exclusive(
                os.path.join(array_dir, CLAIMS, str(rec.array_index)), b"cancelled"
            ):
                return False  # an element has it: it is running
            self.commands.run(self.backend.cancel_argv([rec.job_id]))
        elif not self.commands.run(self.backend.cancel_argv([rec.job_id])).ok:
            return False
        with self.store.write() as tx:
            cancelled(tx, key)
        return True

    def _stop(self, rec: JobRecord) -> bool:
        """The scheduler's cancel command for a started job."""
        assert rec.job_id
        return self.commands.run(self.backend.cancel_argv([rec.job_id])).ok

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
        """The submission script of one job on its own: directives, then the job script."""
        spec = single_spec(res, name, lay.jobdir, lay.workdir, hold=hold, after=after)
        body = single_body(self.backend, script, lay.script)
        return submission_script(file_directives, self.backend.directives(spec), body)

    def hold(self, key: str) -> bool:
        """Keep a job that has not started from starting (the scheduler's hold) until
        :meth:`release`. False if it has started, or is being submitted at this moment."""
        with self.store.write() as tx:
            rec = tx.get(key)
            if rec is None or rec.state not in QUEUED:
                return False
            if rec.state is JobState.HELD:
                return True
            if rec.resources.get("array_dir"):
                raise BackendError(
                    f"job {key} is an element of an array whose elements run each other's "
                    f"tasks, so holding its element would not stop it; cancel it instead, "
                    f"or submit with reuse_slots=False to hold elements one by one"
                )
            if rec.job_id is None and not (rec.reason or "").startswith(SUBMITTING):
                tx.update(key, state=JobState.HELD)  # it is submitted held when its turn comes
                return True
        if rec.job_id is None:
            return False
        r = self.commands.run(self.backend.hold_argv([rec.job_id]))
        if not r.ok:
            log.warning("%s", (r.stderr or r.stdout).strip())
            return False
        with self.store.write() as tx:
            tx.update(key, state=JobState.HELD)
        return True

    def release(self, key: str) -> bool:
        rec = self.store.get(key)
        if rec is None or rec.state is not JobState.HELD:
            return False
        if rec.job_id is None:
            with self.store.write() as tx:
                tx.update(key, state=JobState.PENDING)
            return True
        ok = self.commands.run(self.backend.release_argv([rec.job_id])).ok
        if ok:
            with self.store.write() as tx:
                tx.update(key, state=JobState.PENDING)
        return ok

    def suspend(self, key: str) -> bool:
        return self._signal(key, JobState.RUNNING, self.backend.suspend_argv, JobState.SUSPENDED)

    def resume(self, key: str) -> bool:
        return self._signal(key, JobState.SUSPENDED, self.backend.resume_argv, JobState.RUNNING)

    def _signal(
        self, key: str, want: JobState, argv_of: Callable[[list[str]], list[str]], becomes: JobState
    ) -> bool:
        rec = self.store.get(key)
        if rec is None or rec.state is not want or not rec.job_id:
            return False
        r = self.commands.run(argv_of([rec.job_id]))
        if not r.ok:
            log.warning("%s", (r.stderr or r.stdout).strip())
            return False
        with self.store.write() as tx:
            tx.update(key, state=becomes)
        return True

    def accounting(self, rec: JobRecord) -> JobStatus | None:
        """What the scheduler's accounting says of a finished job (None if nothing)."""
        return self.commands.accounting(rec)

    def look_up(self, job_id: str) -> tuple[JobStatus | None, dict[str, str]]:
        """A job started outside hpcexec: see :meth:`SchedulerCommands.look_up`."""
        return self.commands.look_up(job_id)
