"""Every path of a job, in one place: the files in its job directory, its working
directory, and where its standard output and error go.

A job's ``workdir`` is made absolute once, at submission (:func:`place`), and kept in its
record; its ``stdout``/``stderr`` resources are relative to that ``workdir``. Everything that
writes or reads a job's files (the job script, the local queue, the fork server, the
scheduler driver, the runner, the executor's readers, the CLI) asks a :class:`JobLayout`.
Paths are POSIX paths, here or on a remote host. Imported by the runner: standard library
only.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PAYLOAD = "payload.pkl"
SCRIPT = "job.sh"
RESULT = "result.pkl"
EXITCODE = "exitcode"
STARTED = "started"
STDOUT = "stdout"
STDERR = "stderr"
USAGE = "usage"  # "name value" lines the runner writes: max_rss_kib, user_s, sys_s, wall_s
SUBMIT_SCRIPT = "submit.sh"  # what a scheduler is given, in the job (or array) directory
RECORD = "record.json"  # the job's record as submitted, sealed (see hpcexec.recovery)
JOBID = "jobid"  # the job's id, written by the client once known (or by a warm-started job)
TASK_RESULT = "result.{rank}"  # the outcome of task ``rank`` > 0 of a multi-task job
CHECKPOINT = "checkpoint.pkl"  # what a checkpointed job runs next (hpcexec.checkpoint), sealed
RESTARTS = "restarts"  # a line per run of a job that resumed from its checkpoint


def task_result(rank: int) -> str:
    """The name of the outcome file of task ``rank`` of a job: rank 0's is :data:`RESULT`,
    the job's value (so dependants, the cache and recovery read a multi-task job as any
    other), each other rank's ``result.<rank>``."""
    return RESULT if rank == 0 else TASK_RESULT.format(rank=rank)


#: the files of a job directory that hpcexec writes itself
JOB_FILES = frozenset(
    {
        PAYLOAD,
        SCRIPT,
        RESULT,
        EXITCODE,
        STARTED,
        STDOUT,
        STDERR,
        USAGE,
        SUBMIT_SCRIPT,
        RECORD,
        JOBID,
        CHECKPOINT,
        RESTARTS,
    }
)
PROLOGUE_LOG = "prologue.log"  # what the prologue printed (hpcexec.hooks)
EPILOGUE_LOG = "epilogue.log"
#: the names in a job directory that files of the user's (auxiliary scripts) may not take
RESERVED = JOB_FILES | {PROLOGUE_LOG, EPILOGUE_LOG}


def under(base: str, path: str) -> str:
    """``path`` taken relative to ``base`` (an absolute ``path`` stays as it is)."""
    return posixpath.join(base, path)


def place(
    resources: Mapping[str, Any], *, base: str, expand: Callable[[str], str], local: bool
) -> dict[str, str]:
    """The path resources of a job as it will run, to keep in its record: ``workdir``
    absolute (relative to ``base``: the current directory here, the remote directory on
    another host; default ``base`` itself), and ``stdout``/``stderr`` with a leading ``~``
    expanded by ``expand`` (the home of the host the job runs on)."""
    workdir = under(base, expand(resources.get("workdir") or "."))
    placed = {"workdir": posixpath.normpath(workdir) if local else workdir}
    for stream in (STDOUT, STDERR):
        path = resources.get(stream)
        if path:
            placed[stream] = expand(path) if path.startswith("~") else path
    return placed


@dataclass(frozen=True)
class JobLayout:
    """The paths of one job. ``stdout``/``stderr``: the resources (relative to ``workdir``),
    or None for the files of those names in the job directory."""

    jobdir: str
    workdir: str
    stdout_resource: str | None = None
    stderr_resource: str | None = None
    join_output: bool = False

    @classmethod
    def of(cls, jobdir: str, resources: Mapping[str, Any]) -> JobLayout:
        """The layout of a job from its record's (placed) resources."""
        return cls(
            jobdir,
            resources.get("workdir") or jobdir,
            resources.get(STDOUT) or None,
            resources.get(STDERR) or None,
            bool(resources.get("join_output")),
        )

    def file(self, name: str) -> str:
        """A file of the job directory."""
        return posixpath.join(self.jobdir, name)

    @property
    def payload(self) -> str:
        return self.file(PAYLOAD)

    @property
    def script(self) -> str:
        return self.file(SCRIPT)

    @property
    def result(self) -> str:
        return self.file(RESULT)

    def task_result(self, rank: int) -> str:
        """The outcome file of task ``rank`` (:func:`task_result`)."""
        return self.file(task_result(rank))

    @property
    def exitcode(self) -> str:
        return self.file(EXITCODE)

    @property
    def started(self) -> str:
        return self.file(STARTED)

    @property
    def usage(self) -> str:
        return self.file(USAGE)

    @property
    def stdout(self) -> str:
        """The job's standard output file."""
        return self._output(STDOUT, self.stdout_resource)

    @property
    def stderr(self) -> str:
        """The job's standard error file (with ``join_output`` nothing is written there)."""
        return self._output(STDERR, self.stderr_resource)

    @property
    def stderr_target(self) -> str:
        """Where the job's standard error goes: its stdout file with ``join_output``."""
        return self.stdout if self.join_output else self.stderr

    def output(self, stream: str, *, joined: bool = False) -> str:
        """The file of ``stream`` ("stdout" or "stderr"); ``joined``: where it went."""
        if stream == STDOUT:
            return self.stdout
        return self.stderr_target if joined else self.stderr

    def _output(self, name: str, resource: str | None) -> str:
        return under(self.workdir, resource) if resource else self.file(name)

    def check_start(self) -> None:
        """Raise the :class:`OSError` (naming the path) that keeps the job from starting on
        this machine: its workdir missing or not a directory, an output file that could not
        be opened for appending. Looks only (stat, access): the start opens the files."""
        if not stat.S_ISDIR(os.stat(self.workdir).st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), self.workdir)
        for path in dict.fromkeys((self.stdout, self.stderr_target)):
            _check_appendable(path)


def _check_appendable(path: str) -> None:
    """The error opening ``path`` to append (creating it) would raise, without opening it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        parent = os.path.dirname(path) or "."
        try:
            parent_mode = os.stat(parent).st_mode
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path) from None
        if not stat.S_ISDIR(parent_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path) from None
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path) from None
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)


def cannot_start(e: OSError) -> str:
    """The reason recorded for a job that could not be started: the path and the error."""
    what = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
    return f"cannot start: {what}"
