"""The local backend's task launcher, and the free port a multi-task job meets on. Runs in
the job (standard library only):

- ``python -m hpcexec.launch N -- COMMAND...`` starts ``N`` copies of ``COMMAND`` on this
  machine with the same environment and ``HPCEXEC_TASK_RANK``/``HPCEXEC_TASK_LOCAL_RANK``
  set to ``0..N-1``, waits for all, and when one ends with a non-zero status stops the
  others (SIGTERM, SIGKILL after a grace period), so that no task waits for a peer that
  died. Its exit status: the first failing task's (``128 + n`` for signal ``n``), else 0.
  A SIGTERM or SIGINT it gets is passed on to every task.
- ``python -m hpcexec.launch N --gpus-per-task G -- COMMAND...``: the same, and task ``r``
  sees only its own ``G`` of the job's GPUs: ``CUDA_VISIBLE_DEVICES`` holds the job's list's
  entries ``r*G`` to ``(r+1)*G - 1``.
- ``python -m hpcexec.launch port`` prints a TCP port free on this host, chosen once per
  job by its script before the launcher starts (``MASTER_PORT``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence

from .taskenv import LOCAL_RANK, RANK

GRACE_S = 10.0  # between the SIGTERM and the SIGKILL of the tasks left when one failed
CUDA_DEVICES = "CUDA_VISIBLE_DEVICES"


def free_port() -> int:
    """A TCP port that was free on this host a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _send(procs: Sequence[subprocess.Popen], signum: int) -> None:
    for p in procs:
        if p.returncode is None:
            try:
                p.send_signal(signum)
            except ProcessLookupError:
                pass


def _status(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def task_env(rank: int, gpus_per_task: int = 0) -> dict[str, str]:
    """The environment of task ``rank``: this one, its rank, and its share of the GPUs."""
    env = {**os.environ, RANK: str(rank), LOCAL_RANK: str(rank)}
    devices = env.get(CUDA_DEVICES)
    if gpus_per_task and devices is not None:
        ids = [d for d in devices.split(",") if d]
        env[CUDA_DEVICES] = ",".join(ids[rank * gpus_per_task : (rank + 1) * gpus_per_task])
    return env


def run(ntasks: int, argv: Sequence[str], grace: float = GRACE_S, gpus_per_task: int = 0) -> int:
    """Run ``ntasks`` copies of ``argv``; returns the exit status described above."""
    procs = [subprocess.Popen(list(argv), env=task_env(i, gpus_per_task)) for i in range(ntasks)]
    rank_of = {p.pid: i for i, p in enumerate(procs)}

    def on_signal(signum: int, frame: object) -> None:
        _send(procs, signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    while any(p.returncode is None for p in procs):
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid not in rank_of:
            continue
        procs[rank_of[pid]].returncode = rc = _status(status)
        if rc and not code:
            code = rc
            _send(procs, signal.SIGTERM)
            timer = threading.Timer(grace, _send, (procs, signal.SIGKILL))
            timer.daemon = True
            timer.start()
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["port"]:
        print(free_port())
        return 0
    share = 0
    if len(argv) >= 3 and argv[1] == "--gpus-per-task" and argv[2].isdigit():
        share, argv = int(argv[2]), [argv[0], *argv[3:]]
    if len(argv) >= 3 and argv[0].isdigit() and int(argv[0]) >= 1 and argv[1] == "--":
        return run(int(argv[0]), argv[2:], gpus_per_task=share)
    print(
        "usage: python -m hpcexec.launch N [--gpus-per-task G] -- COMMAND... | port",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
