"""Exceptions raised by hpcexec, all under :class:`HpcexecError`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .states import JobState


class HpcexecError(Exception):
    """Base class of every error hpcexec raises on purpose."""


class ResourceError(HpcexecError, ValueError):
    """A resource or job option has a bad value or an unknown name."""


class PayloadError(HpcexecError, TypeError):
    """The callable or its arguments cannot be serialised for the job."""


class BackendError(HpcexecError):
    """The backend is unknown, unavailable, or cannot express a request."""


class SchedulerOutputError(BackendError):
    """A scheduler command ran but its answer cannot be used: it failed as a whole (its
    controller down) or printed what its parser cannot read. Not a dropped connection:
    the command was run, so the driver logs it and asks again at the next poll."""


class SubmitError(HpcexecError):
    """The scheduler refused a submission; the message carries its words."""


class PrologueFailed(SubmitError):
    """A job's ``prologue`` failed on the submitting side; nothing was submitted. The message
    gives its exit status and the end of its output."""


class TransportError(HpcexecError):
    """A command could not be run or a file could not be moved."""


class CacheError(HpcexecError):
    """The job cache is unusable: corrupt, unsafe, or of an unknown version."""


class UntrustedPath(CacheError):
    """A path hpcexec would run or load from (the cache, ``jobs/``, ``secrets/``, a key, the
    store, a job directory) belongs to another user or can be written by others; the message
    gives the ``chmod`` or ``chown`` that fixes it."""


class IntegrityError(CacheError):
    """A payload or result file fails its integrity check (planted, altered, or sealed with
    a key this cache does not hold); it is never unpickled."""


class RemoteTraceback(Exception):
    """Carries the text of a traceback raised inside a job; set as ``__cause__``."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class RemoteError(HpcexecError, RuntimeError):
    """Stands in for an exception raised in a job that cannot be rebuilt here: it cannot be
    pickled, its class cannot be imported here, or its ``__init__`` does not take its own
    ``args`` back. ``type_name`` is its class's qualified name, ``message`` its text,
    ``remote_traceback`` the traceback's text (also the ``RemoteTraceback`` ``__cause__``)."""

    def __init__(self, type_name: str, message: str, remote_traceback: str, why: str) -> None:
        super().__init__(f"{type_name}: {message} ({why})")
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __reduce__(self):  # rebuilt from its fields, so it travels on (joblib, dask)
        return (_rebuild_remote_error, (self.args[0], self.__dict__))


def _rebuild_remote_error(text: str, fields: dict) -> RemoteError:
    err = RemoteError.__new__(RemoteError)
    Exception.__init__(err, text)
    err.__dict__.update(fields)
    return err


class JobFailed(HpcexecError):
    """A job ended without a result: killed, timed out, out of memory, or non-zero exit."""

    def __init__(
        self,
        message: str,
        *,
        state: JobState | None = None,
        exit_code: int | None = None,
        signal: int | None = None,
        reason: str | None = None,
        key: str | None = None,
        job_id: str | None = None,
        stderr_tail: str = "",
    ) -> None:
        self.state = state
        self.exit_code = exit_code
        self.signal = signal
        self.reason = reason
        self.key = key
        self.job_id = job_id
        self.stderr_tail = stderr_tail
        text = message
        if stderr_tail:
            text += "\n--- last lines of the job's stderr ---\n" + stderr_tail.rstrip("\n")
        super().__init__(text)

    def __reduce__(self):  # keep the fields (and the class) through pickling
        return (_rebuild_job_failed, (self.args[0], self.__dict__, type(self)))


class WorkerLost(JobFailed):
    """A task of a worker pool whose worker job ended while it ran the task."""


class OutOfMemory(JobFailed, MemoryError):
    """A job ran out of memory under its limit: it raised :class:`MemoryError` there. Both a
    :class:`JobFailed` (state failed, reason saying so) and a :class:`MemoryError`, so either
    ``except`` catches it. Ask for more ``mem``, or use less."""


def _rebuild_job_failed(
    text: str, fields: dict[str, Any], cls: type[JobFailed] = JobFailed
) -> JobFailed:
    err: JobFailed = BaseException.__new__(cls, text)
    BaseException.__init__(err, text)
    err.__dict__.update(fields)
    return err


class HostKeyError(TransportError):
    """An SSH server's host key is unknown or differs from the known one; the message says
    how to check and add it."""


class ConfigError(HpcexecError, ValueError):
    """A configuration file or profile is invalid or names something unknown; the message
    names the file and line."""


class UnknownJob(HpcexecError, LookupError):
    """No job record matches a key, key prefix or scheduler job id (or more than one does)."""
