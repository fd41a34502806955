"""A Dask cluster whose workers are hpcexec jobs.

Needs ``pip install '.[dask]' numpy`` (``dask.array`` uses numpy); a scheduler only when
one is named. Its workers' records go to ``.hpcexec/`` in the current directory (ignored
by git); Dask's own scratch space is in the temporary directory.

    python examples/dask_cluster.py                 # workers as local jobs on this machine
    python examples/dask_cluster.py slurm debug     # workers as SLURM jobs, partition "debug"

``HPCCluster`` takes dask-jobqueue's keywords: code written for ``SLURMCluster(...)`` moves
over by changing the class name and saying ``backend="slurm"``. Each worker is a job record
in the cache, so the cluster knows which workers wait in the queue and which run.
"""

from __future__ import annotations

import sys
import time

import dask.array as da
from distributed import Client

from hpcexec.adapters.dask import HPCCluster


def main() -> None:
    backend = sys.argv[1] if len(sys.argv) > 1 else "local"
    queue = {"queue": sys.argv[2]} if len(sys.argv) > 2 else {}
    t0 = time.perf_counter()
    with HPCCluster(
        backend,
        cores=1,
        memory="1GB",
        walltime="00:20:00",
        **queue,
        scheduler_options={"dashboard_address": ":0"},
    ) as cluster:
        print(cluster.job_script())
        cluster.adapt(minimum=0, maximum=2)  # workers come when there is work
        with Client(cluster):
            x = da.random.random((4000, 4000), chunks=(1000, 1000))
            print(f"mean of 16M random numbers: {float(x.mean().compute()):.3f}")
            print("worker jobs:", cluster.job_states())
            print("dashboard:", cluster.dashboard_link)
    print(f"done in {time.perf_counter() - t0:.1f} s; worker jobs ended with the cluster")


if __name__ == "__main__":
    main()
