"""Atomic writes and the exit-code and started files' contents (their paths:
:mod:`hpcexec.layout`). Imported by the runner, so it stays free of heavy imports."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from .layout import JOBID, STARTED


def write_atomic(
    path: str | os.PathLike, data: bytes, *, also: str | os.PathLike | None = None
) -> None:
    """Write ``data`` to a temporary name beside ``path`` and rename it into place.
    ``also``: a second name of the same file (a hard link), in place before ``path`` is."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        if also is not None:
            _link(tmp, Path(also))
        os.replace(tmp, path)
    except BaseException:
        try:  # a full disk, say: leave no half-written file behind
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _link(src: Path, dst: Path) -> None:
    """``dst`` becomes another name of ``src``, replacing what had that name atomically."""
    try:
        os.link(src, dst)
    except FileExistsError:
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        os.link(src, tmp)
        os.replace(tmp, dst)


def parse_exitcode(text: str) -> tuple[int | None, str | None]:
    """The exit-code file holds the exit code on its first line and, optionally, a reason."""
    lines = text.strip().splitlines()
    if not lines:
        return None, None
    try:
        code = int(lines[0].strip())
    except ValueError:
        return None, f"unreadable exit-code file: {text[:80]!r}"
    reason = "\n".join(lines[1:]).strip() or None
    return code, reason


def write_started(jobdir: str | os.PathLike, job_id: str, *, with_job_id: bool = False) -> None:
    """The started file: the job's id and the host it runs on. ``with_job_id``: the job id
    file too, in place before the started file (the same file: its first line is the id),
    for a job whose starter leaves that file to it (:mod:`hpcexec.recovery`)."""
    import platform

    jobdir = Path(jobdir)
    write_atomic(
        jobdir / STARTED,
        f"{job_id}\n{platform.node()}\n".encode(),
        also=jobdir / JOBID if with_job_id else None,
    )


def signal_of(code: int | None) -> int | None:
    """The signal an exit code reports: ``128 + n`` is signal ``n`` (the shell's convention,
    which the exit-code file follows), else None."""
    return code - 128 if code is not None and code > 128 else None


def killed_by(signum: int) -> str:
    """How a job killed by a signal is described: ``killed by SIGKILL (kill -9, ...)``."""
    import signal

    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    note = " (kill -9, or the out-of-memory killer)" if signum == signal.SIGKILL else ""
    return f"killed by {name}{note}"


def create_new(path: str | os.PathLike) -> bool:
    """Create an empty file only if no file has that name (atomically: of two processes, one
    succeeds); False when one exists. How in-job code claims work (:mod:`hpcexec.slots`,
    :mod:`hpcexec.lanerun`)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return False
    return True


def redirect_output(stdout: str, stderr: str, *, append: bool = True) -> None:
    """Point this process's standard output and error at a job's files (appended to, or
    truncated; one descriptor when both are the same file)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    out = os.open(stdout, flags, 0o644)
    err = out if stderr == stdout else os.open(stderr, flags, 0o644)
    os.dup2(out, 1)
    os.dup2(err, 2)
    for fd in {out, err} - {1, 2}:  # a lane's process redirects once per job it runs
        os.close(fd)


def exit_forked(body: Callable[[], int]) -> NoReturn:
    """In a forked job process: run ``body``, report what escapes it, and leave with its
    exit code without running the parent's clean-up."""
    code = 1
    try:
        code = body()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # the body's every failure is reported, never lost  # noqa: BLE001
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
