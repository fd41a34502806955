"""Stopping a running local job at its walltime or deadline: the warning signal (SIGUSR2)
``checkpoint_grace`` seconds ahead to a job that checkpoints, sent again each second until it
ends (one that came while the job started was ignored, see :mod:`hpcexec.script`), SIGTERM to
its process group at the limit, SIGKILL :data:`KILL_GRACE` seconds later. What a look decides
is the record's new ``reason``; the local queue (:mod:`hpcexec.localqueue`) writes it."""

from __future__ import annotations

import logging
import signal

from .backends.local import split_job_id
from .checkpoint import WARNING
from .driver import terminated
from .record import JobRecord
from .resourcevalues import instant_epoch
from .transport.base import Transport

log = logging.getLogger("hpcexec.localqueue")

KILL_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
TIMEOUT_REASON = "walltime exceeded"
DEADLINE_REASON = "deadline reached"
STOPPED_REASONS = (TIMEOUT_REASON, DEADLINE_REASON)  # stopped by the queue: ends timeout
WARNED_REASON = "sent the warning signal ahead of its walltime"  # for its checkpoint
WARN_AGAIN = 1.0  # seconds between warnings to a job in its grace


def stop_at(rec: JobRecord) -> tuple[float, str] | None:
    """When a running job must be stopped, and why: its walltime or its deadline."""
    ends = []
    limit = rec.resources.get("time")
    if limit and rec.started:
        ends.append((rec.started + limit, TIMEOUT_REASON))
    if rec.resources.get("deadline"):
        ends.append((instant_epoch(rec.resources["deadline"]), DEADLINE_REASON))
    return min(ends) if ends else None


class Stopper:
    """Signals the running local jobs whose time is up (or nearly, for a warning)."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._warned_at: dict[str, float] = {}  # job id -> when this client last warned it

    def look(self, rec: JobRecord, now: float) -> str | None:
        """Signal ``rec``'s job as its time asks; the record's new reason, or None."""
        stop = stop_at(rec)
        if stop is None or not rec.job_id:
            return None
        at, why = stop
        over = now - at
        pid = split_job_id(rec.job_id)[0]
        grace = rec.resources.get("checkpoint_grace")
        if grace and -grace <= over <= 0:
            if rec.reason != WARNED_REASON and not self._stopped(rec):
                log.info("job %s: %s in %.0f s; sending %s", rec.key, why, -over, WARNING.name)
                self._warn(rec.job_id, pid, now)
                return WARNED_REASON
            if rec.reason == WARNED_REASON and now - self._warned_at.get(rec.job_id, 0.0) >= (
                WARN_AGAIN
            ):
                self._warn(rec.job_id, pid, now)
        if over > 0 and rec.reason not in STOPPED_REASONS:
            log.info("job %s: %s; sending SIGTERM", rec.key, why)
            self.transport.signal_group(pid, signal.SIGTERM)
            return why
        if over > KILL_GRACE:
            self.transport.signal_group(pid, signal.SIGKILL)
        return None

    @staticmethod
    def _stopped(rec: JobRecord) -> bool:
        return rec.reason in STOPPED_REASONS or terminated(rec)

    def _warn(self, job_id: str, pid: int, now: float) -> None:
        self.transport.signal_process(pid, WARNING)  # the runner, as SLURM's B:
        self._warned_at[job_id] = now

    def keep(self, job_ids: set[str]) -> None:
        """Forget the jobs not in ``job_ids`` (they ended)."""
        for job_id in set(self._warned_at) - job_ids:
            del self._warned_at[job_id]
