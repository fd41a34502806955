"""Callables that survive the end of their job: :class:`Checkpointable` and :class:`Resubmit`.

A job of a checkpointable callable asks its scheduler for a warning signal (SIGUSR2)
``checkpoint_grace`` seconds before its walltime, and on preemption where the scheduler sends
one. On that signal the runner calls the callable's :meth:`Checkpointable.checkpoint` with
the call's arguments, writes the :class:`Resubmit` it returns beside the payload (sealed, as
the payload is), and the job ends ``checkpointed``. The job then runs again (requeued by the
scheduler, or submitted again by the client, up to ``requeue=N`` times) under the same record
and future, and its runner calls the resubmission instead of the payload. A shell job opts in
with ``requeue=N`` (its script stops the body at the warning: :mod:`hpcexec.script`). In-job
code: standard library only.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any

#: the signal a scheduler sends ahead of a job's end (SLURM ``--signal``, LSF ``-wa``, ...)
WARNING = signal.SIGUSR2
#: how an exit-code file's reason starts when the job ended checkpointed
CHECKPOINTED = "checkpointed"
#: the whole reason of such an end (the runner's, and a requeueable shell job's script's)
REQUEUED_REASON = f"{CHECKPOINTED} on {WARNING.name}: runs again where requeue allows"
#: seconds of warning before the walltime when ``checkpoint_grace`` is not given
DEFAULT_GRACE = 90


@dataclass
class Resubmit:
    """What a checkpointed job runs when it runs again: ``fn(*args, **kwargs)``."""

    fn: Any
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


class Checkpointable:
    """Base class of a callable object whose job is checkpointed ahead of its walltime or
    preemption and runs again from its state (``requeue=N`` on the executor or its
    options). Its attributes are its state: the default :meth:`checkpoint` pickles the
    object as it is at the signal, and the next run calls it with the same arguments."""

    def checkpoint(self, *args: Any, **kwargs: Any) -> Resubmit:
        """What to run next time, given the call's arguments; by default this object (its
        state as it is now) with the same arguments. Override to save state elsewhere or to
        change the arguments."""
        return Resubmit(self, args, kwargs)


class Warned(BaseException):
    """Raised in the job's main thread when the warning signal arrives (see the runner)."""


def on_warning(signum: int, frame: Any) -> None:
    raise Warned(signum)


class WarningGate:
    """Holds the warning signal until the job can checkpoint: one that arrives while the
    payload still loads (a job warned right after it started, on a loaded machine) is kept,
    not fatal, and raised as :class:`Warned` once :meth:`open` installs the handler."""

    def __init__(self) -> None:
        self.seen = False

    def hold(self) -> None:
        signal.signal(WARNING, self._remember)

    def _remember(self, signum: int, frame: Any) -> None:
        self.seen = True

    def open(self) -> None:
        """From now on the warning raises :class:`Warned` (at once if it came already)."""
        signal.signal(WARNING, on_warning)
        if self.seen:
            raise Warned(WARNING)
