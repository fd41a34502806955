"""Names of the files in a job directory, and atomic writes. Imported by the runner, so
it stays free of heavy imports."""
from __future__ import annotations

import os
from pathlib import Path

PAYLOAD = "payload.pkl"
SCRIPT = "job.sh"
RESULT = "result.pkl"
EXITCODE = "exitcode"
STARTED = "started"
STDOUT = "stdout"
STDERR = "stderr"
USAGE = "usage"  # "name value" lines the runner writes: max_rss_kib, user_s, sys_s, wall_s
RECORD = "record.json"  # the job's record as submitted, sealed (see hpcexec.recovery)
JOBID = "jobid"  # the scheduler's id, written by the client once it is known


def output_path(resources: dict, jobdir: str, stream: str, *, joined: bool = False) -> str:
    """The file of a job's ``stream`` ("stdout" or "stderr"): the ``stdout``/``stderr``
    resource (relative to its ``workdir``), else the file of that name in its directory.
    ``joined``: where its standard error went, which is its stdout file with ``join_output``."""
    if joined and stream == STDERR and resources.get("join_output"):
        stream = STDOUT
    path = resources.get(stream)
    if not path:
        return os.path.join(jobdir, stream)
    return os.path.join(resources.get("workdir") or jobdir, path)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path`` and rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:  # a full disk, say: leave no half-written file behind
            os.unlink(tmp)
        except OSError:
            pass
        raise


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


def write_started(jobdir: str | os.PathLike, job_id: str) -> None:
    """The started file: the job's id and the host it runs on."""
    import socket

    write_atomic(Path(jobdir) / STARTED, f"{job_id}\n{socket.gethostname()}\n".encode())


def killed_by(signum: int) -> str:
    """How a job killed by a signal is described: ``killed by SIGKILL (kill -9, ...)``."""
    import signal

    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    note = " (kill -9, or the out-of-memory killer)" if signum == signal.SIGKILL else ""
    return f"killed by {name}{note}"
