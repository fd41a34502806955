"""When a job that ended runs again, under the same record and the same future.

A job submitted with ``retries=N`` that ends for a cause outside its own code runs again, up
to N times: its record goes back to pending with the end kept in ``record.attempts``, and
the futures waiting for it never see that end. Causes outside the job's code:

* the job was lost: it left the queue with no exit-code file and no accounting record;
* the scheduler says a node failed, did not boot, or the job was preempted
  (:data:`OUTSIDE_REASONS`, the words the backends give those states);
* it was killed by a signal from outside (SIGKILL, SIGTERM, SIGHUP, SIGINT) that neither
  hpcexec (``terminate()``, the walltime), the user nor the memory limit sent;
* its own code exited with one of ``retry_exit_codes`` (the job says "run me again").

A :class:`~hpcexec.checkpoint.Checkpointable` job, or a shell job given ``requeue``, that
ended ``checkpointed`` (at its warning signal) runs again at once while ``requeue=N`` allows,
from its checkpoint (a shell body from its own files); after that its end is a ``timeout``.
So does such a job killed by the warning signal before its script could take it.

A Python exception, another exit code, a walltime kill (``timeout``), a cancel, and an
out-of-memory kill end the job as before. Each run again after the first waits longer
(:func:`delay`), through the ``begin`` time every backend already honours. The files the
earlier run left in the job directory move to ``attempt.<n>/`` (:func:`attempt_dir`), so the
next run starts clean and the earlier logs are kept.

Both drivers call :func:`next_run` on every end they are about to record.
"""

from __future__ import annotations

import logging
import posixpath
import signal as _signal
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .checkpoint import CHECKPOINTED, WARNING
from .errors import TransportError
from .layout import (
    EXITCODE,
    JOBID,
    RESULT,
    STARTED,
    STDERR,
    STDOUT,
    TASK_RESULT,
    USAGE,
    JobLayout,
)
from .record import JobRecord
from .resourcevalues import instant
from .states import JobState

if TYPE_CHECKING:
    from .transport.base import Transport

log = logging.getLogger(__name__)

#: the reasons the backends give an end that the job's code did not cause
OUTSIDE_REASONS = ("node failure", "node boot failure", "preempted", "launch failed")
#: signals that come from outside a job (its own faults, SIGSEGV and the like, do not)
OUTSIDE_SIGNALS = frozenset(
    {_signal.SIGKILL.value, _signal.SIGTERM.value, _signal.SIGHUP.value, _signal.SIGINT.value}
)
#: files of the job directory that one run writes: moved aside before the next
RUN_FILES = (EXITCODE, STARTED, JOBID, USAGE, RESULT, STDOUT, STDERR)
TASK_RESULT_PREFIX = TASK_RESULT.partition("{")[0]  # result.<rank> of a job's other tasks
FIRST_DELAY = 15.0  # seconds before the second run again; doubled for each later one
MAX_DELAY = 600.0
BEGIN = instant(round_up=True)  # a begin time as the resource model keeps it


def attempt_dir(n: int) -> str:
    """The directory, in the job directory, of the files of run ``n`` (from 1)."""
    return f"attempt.{n}"


def delay(runs_again: int) -> float:
    """Seconds before run-again number ``runs_again`` (from 1): none before the first (the
    scheduler avoids a failed node by itself), then 15 s, 30 s, ... up to 10 minutes."""
    if runs_again <= 1:
        return 0.0
    return min(MAX_DELAY, FIRST_DELAY * 2 ** (runs_again - 2))


def outside_cause(rec: JobRecord, end: dict[str, Any]) -> str | None:
    """Why the end ``end`` (the record's new fields) was not caused by the job's own code,
    or None."""
    state = end.get("state")
    reason = end.get("reason") or ""
    sig = end.get("signal")
    code = end.get("exit_code")
    if state is JobState.LOST:
        return reason or "lost"
    if state is not JobState.FAILED:
        return None
    if any(reason.startswith(r) for r in OUTSIDE_REASONS):
        return reason
    if sig in OUTSIDE_SIGNALS and not reason.startswith("out of memory"):
        return reason or f"killed by signal {sig}"
    if code in rec.resources.get("retry_exit_codes", ()):
        return f"exit code {code}, one of its retry_exit_codes"
    return None


def _checkpointed(reason: str | None) -> bool:
    return (reason or "").startswith(CHECKPOINTED)


def warned_before_start(rec: JobRecord, end: dict[str, Any]) -> bool:
    """Whether the warning signal killed a job that asked for it (``requeue``): its script
    ignores the signal from its first line on, so it came before anything of the job ran.
    SLURM may send it up to a minute early, at the job's start when the walltime is short."""
    return (
        end.get("state") is JobState.FAILED
        and end.get("signal") == WARNING.value
        and int(rec.resources.get("requeue", 0)) > 0
        and not _checkpointed(end.get("reason"))  # exit code 140 from a script that took it
    )


def next_run(rec: JobRecord, end: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """The fields to record for ``rec``'s end ``end``: ``end`` itself, or, where the job has
    a run again left (``requeue`` for a checkpointed end, or one warned before it started;
    ``retries`` for one outside its code), those that queue it again (the end kept in
    ``attempts``). The caller moves the run's files aside (:data:`RUN_FILES`)."""
    if warned_before_start(rec, end):
        end = {**end, "reason": f"{CHECKPOINTED} before it started: {WARNING.name} came first"}
    if _checkpointed(end.get("reason")):
        return _requeued(rec, end, now)
    allowed = int(rec.resources.get("retries", 0))
    done = sum(not _checkpointed(a.get("reason")) for a in rec.attempts)
    cause = outside_cause(rec, end) if done < allowed else None
    if cause is None:
        return end
    return _again(rec, end, f"runs again ({done + 1} of {allowed} retries) after: {cause}", done)


def _requeued(rec: JobRecord, end: dict[str, Any], now: float | None) -> dict[str, Any]:
    """A checkpointed end: queued again at once while ``requeue`` allows, else a timeout."""
    allowed = int(rec.resources.get("requeue", 0))
    done = sum(_checkpointed(a.get("reason")) for a in rec.attempts)
    if done >= allowed:
        return {
            **end,
            "state": JobState.TIMEOUT,
            "reason": f"{end.get('reason')}; but its requeue={allowed} runs again are spent",
        }
    return _again(rec, end, f"requeued ({done + 1} of {allowed}) after: {end['reason']}", 0, now)


def _again(
    rec: JobRecord, end: dict[str, Any], why: str, done: int, now: float | None = None
) -> dict[str, Any]:
    """The fields that queue ``rec`` again after ``end`` (the ``done + 1``-th run again of
    its kind, which sets the delay), saying ``why``."""
    now = time.time() if now is None else now
    past = {
        "job_id": rec.job_id,
        "state": end["state"].value,
        "exit_code": end.get("exit_code"),
        "signal": end.get("signal"),
        "reason": end.get("reason"),
        "started": end.get("started", rec.started),
        "finished": end.get("finished", now),
    }
    resources = {k: v for k, v in rec.resources.items() if k != "array_dir"}
    wait = delay(done + 1)
    if wait:
        resources["begin"] = BEGIN(timedelta(seconds=wait))
    log.warning("job %s (%s): %s%s", rec.name, rec.key, why, f"; in {wait:.0f} s" if wait else "")
    return dict(
        state=JobState.PENDING,
        job_id=None,
        array_index=None,
        exit_code=None,
        signal=None,
        reason=why,
        started=None,
        finished=None,
        submitted=now,
        resources=resources,
        attempts=[*rec.attempts, past],
    )


def settle(transport: Transport, rec: JobRecord, end: dict[str, Any]) -> dict[str, Any]:
    """:func:`next_run` of ``rec``'s end; where it runs again, its last run's files moved
    aside first (into :func:`attempt_dir` of its number)."""
    values = next_run(rec, end)
    if "attempts" in values:  # it runs again
        set_aside(transport, rec, len(values["attempts"]))
    return values


def set_aside(transport: Transport, rec: JobRecord, n: int) -> None:
    """Move the files run ``n`` of ``rec`` left in its job directory (:data:`RUN_FILES`, the
    task results) into ``attempt.<n>/``; a file that cannot be moved is logged and left."""
    lay = JobLayout.of(rec.jobdir, rec.resources)
    own = {lay.stdout, lay.stderr}  # output files in the job directory, not the user's paths
    target = posixpath.join(rec.jobdir, attempt_dir(n))
    try:
        names = transport.list_dir(rec.jobdir)
        transport.make_dir(target)
        for name in names:
            path = posixpath.join(rec.jobdir, name)
            is_output = name in (STDOUT, STDERR)
            if (name in RUN_FILES or name.startswith(TASK_RESULT_PREFIX)) and (
                not is_output or path in own
            ):
                transport.rename(path, posixpath.join(target, name))
    except (OSError, TransportError) as e:
        log.warning("the files of run %d of job %s stay where they are: %s", n, rec.key, e)
