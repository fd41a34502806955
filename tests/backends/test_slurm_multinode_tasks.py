"""Multi-task callables across nodes, on the live three-node SLURM of
tests/clusters/slurm_multinode.sh (nodes n1, n2, n3; two CPUs each; MPI through PMIx)."""

from __future__ import annotations

import subprocess
import time

import jobfns
import pytest
from multinode import NODES, need_mpi4py

pytestmark = pytest.mark.slurm_multinode


def test_two_nodes_by_two_tasks_run_four_ranks_on_two_hosts(mex):
    values = mex.options(nodes=2, ppn=2).submit(jobfns.task_on_node).results(timeout=180)
    assert [t["rank"] for t, *_ in values] == [0, 1, 2, 3]
    hosts = [host for _, _, host, _ in values]
    assert hosts == [hosts[0], hosts[0], hosts[2], hosts[2]] and hosts[0] != hosts[2]
    assert set(hosts) <= set(NODES)
    for rank, (t, env, *_) in enumerate(values):
        assert (t["world_size"], t["nodes"]) == (4, 2)
        assert t["local_rank"] == rank % 2 and t["node_rank"] == rank // 2
        assert t["master_addr"] == hosts[0] and t["master_port"] == values[0][0]["master_port"]
        # the conventional variables agree with hpcexec.task()
        assert env == {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank % 2),
            "WORLD_SIZE": "4",
            "MASTER_ADDR": t["master_addr"],
            "MASTER_PORT": str(t["master_port"]),
        }


def test_the_nodelist_names_each_node_as_every_backend_does(mex):
    values = mex.options(nodes=2, ppn=1).submit(jobfns.task_on_node).results(timeout=180)
    hosts = [host for _, _, host, _ in values]
    # comma-separated host names, not SLURM's compressed n[1-2]
    assert {nodelist for *_, nodelist in values} == {",".join(hosts)}


def test_mpi_allreduce_across_three_nodes_through_results(mex):
    need_mpi4py()
    f = mex.options(nodes=3, ppn=2).submit(jobfns.mpi_allreduce)
    values = f.results(timeout=240)
    assert [(rank, size, total) for rank, size, _, total in values] == [
        (r, 6, 21) for r in range(6)
    ]
    assert sorted({host for _, _, host, _ in values}) == list(NODES)
    assert f.result() == values[0]


def test_a_failing_rank_fails_the_job_and_stops_the_others(mex, slurm_multinode):
    start = time.monotonic()
    f = mex.options(nodes=2, ppn=1).submit(jobfns.rank_fails, 1, 600)
    with pytest.raises(ValueError, match="rank 1 failed") as info:
        f.result(timeout=240)
    assert info.value.task_rank == 1
    assert time.monotonic() - start < 240  # rank 0 would have slept 600 s
    job_id = f.info().job_id
    assert job_id
    queued = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"],
        capture_output=True,
        text=True,
        env=slurm_multinode,
        timeout=30,
    ).stdout.strip()
    assert queued in ("", "COMPLETING"), f"job {job_id} still {queued}"
