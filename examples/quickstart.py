"""Quickstart: run Python functions and shell commands as jobs on this machine.

Needs ``pip install .`` (run from the clone) and nothing else. It keeps its jobs in
``.hpcexec/`` in the current directory (ignored by git).

    python examples/quickstart.py      # runs the jobs, with a progress bar
    python examples/quickstart.py      # again: every result comes from the cache at once

The local backend needs no scheduler. Change ``Executor()`` to ``Executor(backend="slurm",
...)`` and the same script runs on a cluster.
"""

from __future__ import annotations

import random
import time

import hpcexec


def simulate(n: int, seed: int = 0) -> float:
    """A stand-in for real work: the mean of n random numbers."""
    rng = random.Random(seed)
    time.sleep(0.3)
    return sum(rng.random() for _ in range(n)) / n


def main() -> None:
    t0, started = time.perf_counter(), time.time()
    with hpcexec.Executor(cache_dir=".hpcexec") as ex:
        futures = [ex.submit(simulate, 100_000, seed=s) for s in range(6)]
        hpcexec.wait(futures, progress=True)
        for s, f in enumerate(futures):
            print(f"simulate(seed={s}) = {f.result():.5f}   job {f.job_id}")

        squares = list(ex.map(pow, range(100), [2] * 100, progress=True))
        print("sum of the first 100 squares:", sum(squares))

        shell = ex.options(name="hello").submit_shell('echo "hello from job $HPCEXEC_JOB_NAME"')
        print(shell.result().stdout.strip())
        # A record submitted before this run started is a result this run took from the cache.
        cached = sum(f.record.submitted < started for f in [*futures, shell])
    took = time.perf_counter() - t0
    if cached:
        print(f"done in {took:.2f} s: {cached} of 7 jobs came from the cache in {ex.cache_dir}")
    else:
        print(f"done in {took:.2f} s; run it again and the results come from {ex.cache_dir}")


if __name__ == "__main__":
    main()
