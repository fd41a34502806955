"""A parameter sweep on SLURM: the whole grid is one array job.

Needs ``pip install .`` on a SLURM login node (``--backend sge``, ``pbspro``, ``torque`` or
``lsf`` for the others), or nothing more with ``--backend local``. It keeps its jobs in
``.hpcexec/`` in the current directory (ignored by git).

    python examples/sweep_slurm.py                      # on a SLURM login node
    python examples/sweep_slurm.py --queue debug --limit 4
    python examples/sweep_slurm.py --backend local      # the same sweep on this machine

``map`` over the grid writes one record per point and submits them as one array job (one
``sbatch``, split at the cluster's MaxArraySize); ``array_limit`` caps how many elements run
at once (``--array=0-11%4``). Results come back in grid order. Run it again and every point
comes from the cache: nothing is submitted. ``hpcexec jobs --match sweep`` lists the jobs.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import hpcexec


def simulate(point: tuple[float, int]) -> dict[str, float]:
    """A stand-in for real work: the energy of a damped oscillator at (alpha, mode)."""
    alpha, mode = point
    steps = 20000
    energy = sum(math.exp(-alpha * t / 2000) * math.cos(mode * t / 3000) for t in range(steps))
    return {"alpha": alpha, "mode": mode, "energy": energy / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend", default="slurm", help="slurm (default), sge, pbspro, torque, lsf or local"
    )
    parser.add_argument("--queue", help="partition (default: the cluster's default)")
    parser.add_argument(
        "--limit", type=int, default=None, help="most array elements running at once"
    )
    parser.add_argument("--cache-dir", default=".hpcexec")
    args = parser.parse_args()

    grid = list(itertools.product([0.1, 0.2, 0.5, 1.0], [1, 2, 3]))
    queue = {"queue": args.queue} if args.queue else {}
    t0 = time.perf_counter()
    with hpcexec.Executor(
        args.backend, cache_dir=args.cache_dir, time="0:05:00", mem="200M", **queue
    ) as ex:
        sweep = ex.options(name="sweep", array_limit=args.limit)
        results = list(sweep.map(simulate, grid, progress=True))
        records = ex.store.select(match="^sweep", fields=("name",), backend=args.backend)
    print(f"{'alpha':>6} {'mode':>5} {'energy':>9}")
    for r in results:
        print(f"{r['alpha']:6.2f} {r['mode']:5d} {r['energy']:9.5f}")
    best = min(results, key=lambda r: r["energy"])
    arrays = sorted({(r.job_id or "-").split("_")[0] for r in records})
    print(
        f"lowest energy at alpha={best['alpha']}, mode={best['mode']}; {len(grid)} points "
        f"in {time.perf_counter() - t0:.1f} s, {args.backend} job(s) {', '.join(arrays)}"
    )


if __name__ == "__main__":
    main()
