"""A 2-node x 2-task callable on a live multi-node SLURM, against raw sbatch + srun.

Run on demand (this is not a test)::

    bash tests/clusters/slurm_multinode.sh start      # as root: three nodes, PMIx
    python benchmarks/multinode_tasks.py               # 11 shuffled rounds (~1 minute)
    python benchmarks/multinode_tasks.py --rounds 9 --json out.json

Each round times, one after the other on the same cluster, in a shuffled order:

- raw: ``sbatch -N2 --ntasks-per-node=2 --wrap 'srun python -c pass'`` until the job has left
  ``squeue`` (polled every 0.2 s); and the same with tasks that import cloudpickle, the
  least a Python task does (the rest between that and hpcexec is hpcexec's own);
- hpcexec: ``ex.options(nodes=2, ppn=2).submit(fn, i).results()``, every rank's value back,
  with one Executor made before the first round (as a workflow keeps one) and hpcexec's
  default polling and coalescing (``--poll``, ``--coalesce`` change them).

The figure is the median of the rounds; target: hpcexec <= 1.3x raw. The cluster's client
variables (``SLURM_CONF``, OpenMPI's loopback settings) are read from ``--env`` (default: the
file slurm_multinode.sh writes), so the one-node test SLURM is not used by mistake. The exit
status is 1 when a measurement failed (an error, a timeout, a wrong result).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hpcexec

ENV_FILE = Path("/var/lib/hpcexec-test-slurm-multi/env")
TIMEOUT = 300.0  # seconds one round may take
TARGET = 1.3


def where(i):
    """What each task returns: its rank, world size and host, and the round's number."""
    t = hpcexec.task()
    return t.rank, t.world_size, os.uname().nodename, i


def use_cluster(env_file: Path) -> None:
    """Export the cluster's client variables (this process and the commands it runs)."""
    for line in env_file.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            os.environ[key] = value


def wait_gone(job_id: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-o", "%i", "-j", job_id], capture_output=True, text=True
        ).stdout
        if not out.strip():
            return
        time.sleep(0.2)
    raise TimeoutError(f"raw job {job_id} still queued after {TIMEOUT:.0f} s")


def raw_round(task: str) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "-N2",
            "--ntasks-per-node=2",
            "--output=/dev/null",
            "--wrap",
            f"srun {sys.executable} -c {task!r}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    wait_gone(out.stdout.strip().split(";")[0])
    return time.perf_counter() - t0


def hpcexec_round(ex: hpcexec.Executor, i: int) -> float:
    t0 = time.perf_counter()
    values = ex.options(nodes=2, ppn=2).submit(where, i).results(timeout=TIMEOUT)
    elapsed = time.perf_counter() - t0
    ranks = [(rank, size, round_) for rank, size, _, round_ in values]
    if ranks != [(r, 4, i) for r in range(4)] or len({h for _, _, h, _ in values}) != 2:
        raise AssertionError(f"wrong results: {values}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=11, help="interleaved rounds (default 11)")
    ap.add_argument(
        "--gap", type=float, default=1.5, help="idle seconds before each job (default 1.5)"
    )
    ap.add_argument("--poll", type=float, help="hpcexec's poll_interval (default: its own)")
    ap.add_argument(
        "--coalesce", type=float, help="hpcexec's coalesce window in s (default: its own)"
    )
    ap.add_argument("--env", type=Path, default=ENV_FILE, help=f"default {ENV_FILE}")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = ap.parse_args()
    if not args.env.exists():
        sys.exit(
            f"{args.env} not found: start the cluster (bash tests/clusters/slurm_multinode.sh start)"
        )
    use_cluster(args.env)
    raw, raw_py, ours = [], [], []
    with tempfile.TemporaryDirectory(prefix="hpcexec-mn-") as cache:
        t0 = time.perf_counter()
        tuned = {} if args.coalesce is None else {"coalesce": args.coalesce}
        ex = hpcexec.Executor(
            "slurm", cache_dir=cache, poll_interval=args.poll, time="0:10:00", **tuned
        )
        made = time.perf_counter() - t0
        try:
            order = random.Random(1)  # the same shuffles each run
            for i in range(args.rounds):
                # in a shuffled order each round: SLURM schedules in ticks, and a fixed order
                # would give one of the three the same place in them every round
                steps = [
                    (raw, lambda: raw_round("pass")),
                    (raw_py, lambda: raw_round("import cloudpickle")),
                    (ours, lambda i=i: hpcexec_round(ex, i)),
                ]
                order.shuffle(steps)
                for into, measure in steps:
                    time.sleep(args.gap)  # the nodes idle again: a job right after another
                    into.append(measure())  # waits a scheduling cycle for their clean-up
                print(
                    f"  round {i + 1}: raw {raw[-1]:.2f} s, raw importing cloudpickle "
                    f"{raw_py[-1]:.2f} s, hpcexec {ours[-1]:.2f} s",
                    flush=True,
                )
        finally:
            ex.shutdown(wait=False, cancel_futures=True)
    r, rp, o = statistics.median(raw), statistics.median(raw_py), statistics.median(ours)
    verdict = "PASS" if o <= TARGET * r else "MISS"
    print(
        f"2 nodes x 2 tasks, submit -> results, median of {args.rounds}: hpcexec {o:.2f} s, "
        f"raw sbatch+srun {r:.2f} s, ratio {o / r:.2f}x (target <= {TARGET}x) {verdict}\n"
        f"  raw with tasks importing cloudpickle (as a Python task must) {rp:.2f} s: "
        f"ratio {o / rp:.2f}x\n"
        f"  (making the Executor, not timed above: {made:.2f} s)"
    )
    if args.json:
        figures = dict(
            raw=raw,
            raw_cloudpickle=raw_py,
            hpcexec=ours,
            ratio=o / r,
            target=TARGET,
            executor_made=made,
        )
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
