"""The adapters on a live SLURM against dask-jobqueue, in one run.

    python benchmarks/adapters.py [--quick] [--repeat N] [--tasks 200] [--json PATH]

Needs a running SLURM (``bash tests/clusters/slurm.sh start``) and dask-jobqueue
(``pip install -e '.[bench]'``). Each figure is the median of ``--repeat`` runs (3; 1 with
``--quick``); hpcexec and its reference alternate, so a load that comes and goes touches both.

Rows:

1. Dask: time from ``cluster.scale(2)`` to two workers connected (``wait_for_workers(2)``),
   :class:`hpcexec.adapters.dask.HPCCluster` against dask-jobqueue's ``SLURMCluster`` with the
   same settings (one core, 1 GB and 10 minutes per worker, partition ``debug``, nanny on).
   Target: not slower (ratio <= 1).
2. joblib: ``Parallel`` over ``--tasks`` short tasks, from nothing to the results: hpcexec's
   backend with a new SLURM Executor (``n_jobs=-1``), against joblib's dask backend on a
   dask-jobqueue ``SLURMCluster`` of two one-core workers, cluster start-up included, as a
   user without a running cluster pays it. Target: <= 1.0x. The reference with its workers
   already up (the call alone) is printed too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import hpcexec
import hpcexec.adapters.joblib
from hpcexec.adapters.dask import HPCCluster

SETTINGS = {
    "cores": 1,
    "memory": "1GB",
    "walltime": "00:10:00",
    "queue": "debug",
    "scheduler_options": {"dashboard_address": ":0"},
}
TIMEOUT = 300


def short_task(x: int) -> int:
    """A task of well under a millisecond."""
    return sum(i * i for i in range(200)) + x


def wait_queue_empty(timeout: float = 120) -> None:
    """Until this user's SLURM jobs have left the queue, so runs do not overlap."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        out = subprocess.run(
            ["squeue", "-h", "--me", "-o", "%i"], capture_output=True, text=True
        ).stdout
        if not out.strip():
            return
        time.sleep(0.2)


def jobqueue_cluster(logs: str):
    from dask_jobqueue import SLURMCluster

    return SLURMCluster(log_directory=logs, **SETTINGS)


def scale_time(make: Callable[[], object]) -> float:
    from distributed import Client

    with make() as cluster, Client(cluster) as client:
        t0 = time.perf_counter()
        cluster.scale(2)
        client.wait_for_workers(2, timeout=TIMEOUT)
        return time.perf_counter() - t0


def joblib_ours(tasks: int) -> float:
    from joblib import Parallel, delayed, parallel_config

    with tempfile.TemporaryDirectory(prefix="hpcexec-bench-") as cache:
        t0 = time.perf_counter()
        ex = hpcexec.Executor("slurm", cache_dir=cache, time="00:10:00", queue="debug")
        with parallel_config(backend="hpcexec", executor=ex, n_jobs=-1):
            out = Parallel()(delayed(short_task)(i) for i in range(tasks))
        took = time.perf_counter() - t0
        ex.shutdown()
    assert out == [short_task(i) for i in range(tasks)]
    return took


def joblib_dask_jobqueue(tasks: int, logs: str) -> tuple[float, float]:
    """(cold: cluster start-up to results, warm: the call alone with workers up)."""
    from distributed import Client
    from joblib import Parallel, delayed, parallel_config

    expected = [short_task(i) for i in range(tasks)]
    t0 = time.perf_counter()
    with jobqueue_cluster(logs) as cluster, Client(cluster) as client:
        cluster.scale(2)
        with parallel_config(backend="dask", wait_for_workers_timeout=TIMEOUT):
            client.wait_for_workers(1, timeout=TIMEOUT)
            out = Parallel(n_jobs=-1)(delayed(short_task)(i) for i in range(tasks))
            cold = time.perf_counter() - t0
            client.wait_for_workers(2, timeout=TIMEOUT)
            t1 = time.perf_counter()
            again = Parallel(n_jobs=-1)(delayed(short_task)(i) for i in range(tasks))
            warm = time.perf_counter() - t1
    assert out == expected and again == expected
    return cold, warm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run per figure")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--tasks", type=int, default=200, help="short tasks for row 2")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    try:
        import dask_jobqueue
    except ImportError:
        sys.exit("dask-jobqueue is the reference: pip install -e '.[bench]'")
    if subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        sys.exit("no SLURM here: start it with `bash tests/clusters/slurm.sh start`")
    import distributed
    import joblib

    print(
        f"python {sys.version.split()[0]}, hpcexec {hpcexec.__version__}, "
        f"joblib {joblib.__version__}, distributed {distributed.__version__}, "
        f"dask-jobqueue {dask_jobqueue.__version__}; {repeat} run(s) per figure"
    )
    ours_scale, ref_scale, ours_jl, ref_cold, ref_warm = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="hpcexec-bench-") as tmp:
        for _ in range(repeat):
            wait_queue_empty()
            ref_scale.append(scale_time(lambda: jobqueue_cluster(tmp)))
            wait_queue_empty()
            ours_scale.append(
                scale_time(
                    lambda: HPCCluster("slurm", cache_dir=f"{tmp}/cache-{time.time()}", **SETTINGS)
                )
            )
            wait_queue_empty()
            ours_jl.append(joblib_ours(args.tasks))
            wait_queue_empty()
            cold, warm = joblib_dask_jobqueue(args.tasks, tmp)
            ref_cold.append(cold)
            ref_warm.append(warm)
    med = statistics.median
    rows = [
        ("scale(2) -> 2 workers", med(ours_scale), "SLURMCluster", med(ref_scale), 1.0),
        (
            f"joblib, {args.tasks} short tasks, cold",
            med(ours_jl),
            "dask backend on SLURMCluster, cold",
            med(ref_cold),
            1.0,
        ),
    ]
    print(f"\n{'work':38} {'hpcexec':>9} {'reference':38} {'ref':>8} {'ratio':>6} target")
    for work, ours, ref_name, ref, target in rows:
        ratio = ours / ref
        verdict = "PASS" if ratio <= target else "MISS"
        print(
            f"{work:38} {ours:8.2f}s {ref_name:38} {ref:7.2f}s {ratio:5.2f}x <= {target}x {verdict}"
        )
    print(f"(the dask backend with its workers already up: {med(ref_warm):.2f}s for the call)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "scale_hpcexec": ours_scale,
                    "scale_jobqueue": ref_scale,
                    "joblib_hpcexec": ours_jl,
                    "joblib_dask_cold": ref_cold,
                    "joblib_dask_warm": ref_warm,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
