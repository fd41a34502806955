"""A workflow that survives its own crash.

Needs ``pip install .`` and nothing else (a scheduler only with ``--backend``). It keeps
its jobs in ``.hpcexec-resume/`` in the current directory (ignored by git).

    python examples/resume_after_crash.py                  # on this machine
    python examples/resume_after_crash.py --backend slurm

First the workflow runs in a child process that is killed (SIGKILL, as by a lost login
session or the out-of-memory killer) while its jobs run. Then the same workflow runs again
here: every job is found in the cache by its key, running ones are reattached, finished ones
answer at once, and nothing is submitted twice (same keys, same job ids). To try it by hand:
``python examples/resume_after_crash.py --workflow``, kill it, run that again.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import hpcexec

STEPS = 4


def step(i: int) -> int:
    """A slow step of the workflow."""
    time.sleep(2)
    return i * i


def workflow(ex: hpcexec.Executor) -> list[hpcexec.JobFuture]:
    """The same calls every run: their keys (hashes of function, arguments, resources and
    backend) are the same, so a second run finds the first run's jobs."""
    return [ex.options(name=f"step-{i}").submit(step, i) for i in range(STEPS)]


def crash_midway(backend: str, cache_dir: str) -> None:
    """Submit, wait until a job runs, report the records, then die without cleaning up."""
    ex = hpcexec.Executor(backend, cache_dir=cache_dir, time="0:05:00")
    futures = workflow(ex)
    while not any(f.running() or f.done() for f in futures):
        time.sleep(0.05)
    print(json.dumps({f.key: f.job_id for f in futures}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="local")
    parser.add_argument("--cache-dir", default=".hpcexec-resume")
    parser.add_argument("--workflow", action="store_true", help="run the workflow only")
    parser.add_argument("--crash", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.crash:
        return crash_midway(args.backend, args.cache_dir)

    before: dict[str, str | None] = {}
    if not args.workflow:
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--crash",
                "--backend",
                args.backend,
                "--cache-dir",
                args.cache_dir,
            ],
            capture_output=True,
            text=True,
        )
        assert child.returncode == -signal.SIGKILL, child.stderr
        before = json.loads(child.stdout)
        started = sum(1 for job_id in before.values() if job_id)
        print(f"first run: submitted {len(before)} jobs, {started} had started, then it was killed")

    t0 = time.perf_counter()
    with hpcexec.Executor(args.backend, cache_dir=args.cache_dir, time="0:05:00") as ex:
        known = {r.key for r in ex.store.select()}
        futures = workflow(ex)
        results = [f.result() for f in futures]
        again = [
            f for f in futures if f.key in before and before[f.key] and f.job_id != before[f.key]
        ]
    print(f"second run: {results} in {time.perf_counter() - t0:.1f} s")
    if before:
        print(
            f"jobs found in the cache: {sum(f.key in known for f in futures)} of "
            f"{len(futures)}; started again: {len(again)}"
        )


if __name__ == "__main__":
    main()
