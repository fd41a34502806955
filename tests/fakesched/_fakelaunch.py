"""Fake task launchers for the fake schedulers' jobs: ``mpiexec -n N CMD...`` (PBS Pro,
Torque) runs N copies of CMD with ``PMI_RANK``/``PMI_SIZE`` set, as MPICH's Hydra does;
``blaunch CMD...`` (LSF) one copy per slot of ``LSB_MCPU_HOSTS`` with ``LSF_PM_TASKID``
counted from 1, as LSF does. When one copy fails the others get SIGTERM (SIGKILL 2 s later);
the exit status is the first failing copy's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def _tasks(name: str, argv: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    if name == "blaunch":
        words = os.environ.get("LSB_MCPU_HOSTS", "").split()
        n = sum(int(c) for c in words[1::2]) or 1
        return argv, [{"LSF_PM_TASKID": str(i + 1)} for i in range(n)]
    if len(argv) < 3 or argv[0] not in ("-n", "-np"):
        sys.exit(f"{name}: usage: {name} -n N COMMAND...")
    n = int(argv[1])
    return argv[2:], [{"PMI_RANK": str(i), "PMI_SIZE": str(n)} for i in range(n)]


def main(name: str, argv: list[str]) -> int:
    command, envs = _tasks(name, argv)
    procs = [subprocess.Popen(command, env={**os.environ, **e}) for e in envs]
    code, killed_at = 0, None
    while [p.poll() for p in procs].count(None):
        failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
        if failed and killed_at is None:
            code, killed_at = failed[0], time.monotonic()
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
        if killed_at is not None and time.monotonic() - killed_at > 2:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.05)
    rcs = [p.returncode for p in procs]
    return code or next((rc for rc in rcs if rc), 0)
