"""A worker of a pool (:meth:`hpcexec.Executor.workers`): a job that runs the tasks its
client puts in the pool's directory, one after another in its own process, so that they pay
for the interpreter and for their imports once per worker, not once per task.

The pool's directory (``pools/<id>`` beside the jobs' directories) holds:

- ``inbox/<task>``: a task's sealed payload, written atomically by the client (names that
  start with a dot are files still being written);
- ``claimed/<task>@<worker>``: the same file, moved there by the worker that takes it: a
  rename, which only one worker's succeeds;
- ``tasks/<task>/``: the task's files as a job's (``payload``, the result, the exit-code
  file), written by :func:`hpcexec.runner.run_here`;
- ``done/<task>``: made by the worker once the task's exit-code file is written;
- ``closed``: made by the client; workers leave after the task they run.

A worker takes the oldest task first and leaves when the pool is closed, when it found
nothing to do for ``idle`` seconds, or when the next task might not end before its time
limit (:func:`hpcexec.slots.deadline`, the longest task it ran taken as the next one's
time). A task that raises is that task's outcome; the worker goes on. Runs inside the job.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from .integrity import KeyRing, job_key
from .layout import PAYLOAD
from .runner import run_here
from .slots import SAFETY, deadline

INBOX, CLAIMED, TASKS, DONE, CLOSED = "inbox", "claimed", "tasks", "done", "closed"
DIRS = (INBOX, CLAIMED, TASKS, DONE)  # made by the client when it opens the pool
WORKER = "HPCEXEC_WORKER"  # set to the worker's name while it serves
POLL_MIN = 0.005  # seconds between looks at the inbox right after a task...
POLL_MAX = 0.1  # ...growing to this while it stays empty


def claimed_name(task: str, worker: str) -> str:
    return f"{task}@{worker}"


def parse_claimed(name: str) -> tuple[str, str]:
    """(task, worker) of a name in ``claimed/``."""
    task, _, worker = name.partition("@")
    return task, worker


def serve(pool_dir: str, worker: str, key_file: str, idle: float, time_limit: float | None) -> int:
    """Run the pool's tasks until it is closed, idle for ``idle`` seconds, or near the
    job's time limit (``time_limit`` seconds, where the scheduler does not tell); returns
    how many tasks this worker ran."""
    os.environ[WORKER] = worker  # tasks may tell they run in a worker (joblib's start-up)
    pool = Path(pool_dir)
    keys = KeyRing(job_key(key_file))
    end = deadline(time_limit, time.monotonic())
    longest, ran = 0.0, 0
    waiting_since, pause = time.monotonic(), POLL_MIN
    while not (pool / CLOSED).exists() and time.monotonic() + SAFETY * longest < end:
        task = take(pool, worker)
        if task is None:
            if time.monotonic() - waiting_since >= idle:
                break
            time.sleep(pause)
            pause = min(POLL_MAX, 2 * pause)
            continue
        started = time.monotonic()
        run(pool, task, worker, keys)
        ran += 1
        longest = max(longest, time.monotonic() - started)
        waiting_since, pause = time.monotonic(), POLL_MIN
    return ran


def take(pool: Path, worker: str) -> str | None:
    """Claim the oldest task of the inbox; None when there is none left to claim."""
    for name in sorted(os.listdir(pool / INBOX)):
        if name.startswith("."):
            continue
        try:
            os.rename(pool / INBOX / name, pool / CLAIMED / claimed_name(name, worker))
        except FileNotFoundError:  # another worker took it, or the client cancelled it
            continue
        return name
    return None


def run(pool: Path, task: str, worker: str, keys: KeyRing) -> int:
    """Run one claimed task in this process; its exit code."""
    taskdir = pool / TASKS / task
    taskdir.mkdir(mode=0o700)
    claimed = pool / CLAIMED / claimed_name(task, worker)
    try:
        os.link(claimed, taskdir / PAYLOAD)
    except OSError:  # a file system without hard links
        shutil.copyfile(claimed, taskdir / PAYLOAD)
    code = run_here(taskdir, keys)  # a signal to the worker's job ends it here: no done/
    os.close(os.open(pool / DONE / task, os.O_WRONLY | os.O_CREAT, 0o600))
    return code
