"""The three-node test SLURM of tests/clusters/slurm_multinode.sh: multi-node jobs, MPI through
PMIx, a node crashing and coming back, and its independence from the one-node cluster of
tests/clusters/slurm.sh (neither script's start or stop touches the other's daemons).

The shared cluster is only used here; the tests that crash a node, stop and start do so on a
second cluster of their own (its own directory, ports and munged), so that other tests on the
shared one, and the one-node cluster, are never disturbed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from livecluster import CLUSTERS
from multinode import (
    MULTI_DIR,
    NODES,
    SCRIPT,
    client_env,
    need_mpi4py,
    node_state,
    ports,
    script,
)

pytestmark = pytest.mark.slurm_multinode

ALLREDUCE = """
import socket
from mpi4py import MPI
comm = MPI.COMM_WORLD
total = comm.allreduce(comm.Get_rank() + 1)
print(comm.Get_rank(), comm.Get_size(), socket.gethostname(), total, flush=True)
"""


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    return done.stdout


def wait_for(what: str, check, timeout: float) -> float:
    """Seconds until check() is true; fails naming WHAT after timeout."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"not {what} after {timeout} s"
        time.sleep(0.5)
    return time.monotonic() - start


def test_a_batch_job_on_three_nodes_runs_a_step_on_each(slurm_multinode, tmp_path):
    out = tmp_path / "out"
    run(["sbatch", "--wait", "-N3", "-o", str(out), "--wrap", "srun hostname"], slurm_multinode)
    assert sorted(out.read_text().split()) == list(NODES)


def test_clients_and_jobs_use_this_clusters_config(slurm_multinode, tmp_path):
    """The environment names this cluster; jobs get its SLURM_CONF even with --export=NONE."""
    config = run(["scontrol", "show", "config"], slurm_multinode)
    assert re.search(r"^ClusterName\s*=\s*multi$", config, re.M)
    out = tmp_path / "out"
    run(
        ["sbatch", "--wait", "--export=NONE", "-o", str(out), "--wrap", "echo $SLURM_CONF"],
        slurm_multinode,
    )
    assert out.read_text().strip() == slurm_multinode["SLURM_CONF"]
    printed = script("status", "--env")
    assert printed.returncode == 0, printed.stderr
    assert f"SLURM_CONF={slurm_multinode['SLURM_CONF']}" in printed.stdout.splitlines()


def test_mpi_allreduce_across_the_three_nodes(slurm_multinode, tmp_path):
    need_mpi4py()
    prog = tmp_path / "allreduce.py"
    prog.write_text(ALLREDUCE)
    cmd = ["srun", "--mpi=pmix", "-N3", "-n3", sys.executable, str(prog)]
    try:
        out = run(cmd, slurm_multinode)
    except AssertionError:  # about 1 run in 20 fails to connect once (seen here); once more
        out = run(cmd, slurm_multinode)
    rows = sorted(line.split() for line in out.splitlines())
    assert rows == [["0", "3", "n1", "6"], ["1", "3", "n2", "6"], ["2", "3", "n3", "6"]]


def our_daemons(multi_dir: Path) -> dict[int, str]:
    """The live processes of the cluster in multi_dir (pid: command name)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            comm = (proc / "comm").read_text().strip()
            zombie = "\nState:\tZ" in (proc / "status").read_text()
        except (OSError, ValueError):
            continue
        if comm.startswith("mn-") and f"{multi_dir}/" in cmdline and not zombie:
            found[int(proc.name)] = comm
    return found


def test_the_one_node_scripts_stop_matches_none_of_these_daemons(slurm_multinode):
    """slurm.sh stop finds its daemons by pid file, then by exact command name (pgrep -x):
    none of those names is one of this cluster's daemons', so it cannot stop them."""
    text = (CLUSTERS / "slurm.sh").read_text()
    names = set(re.findall(r"pgrep -x (\w+)", text))
    names |= set(re.findall(r"stop_daemon \S+ \S+ (\w+)", text))
    assert {"slurmctld", "slurmd", "slurmstepd", "munged"} <= names
    ours = our_daemons(MULTI_DIR)
    assert sorted(ours.values()) == ["mn-munged", "mn-slurmctld"] + ["mn-slurmd"] * 3
    for name in names:
        found = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout
        assert not {int(pid) for pid in found.split()} & set(ours), name


def one_node_answers() -> bool:
    done = subprocess.run(["bash", str(CLUSTERS / "slurm.sh"), "status"], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def second_cluster(tmp_path, slurm_multinode):
    """A second three-node cluster in a directory of its own, stopped at the end."""
    if os.geteuid() != 0:
        pytest.skip(f"{SCRIPT.name} runs as root (it starts daemons in namespaces)")
    d = tmp_path / "mn"
    yield d
    stopped = script("stop", multi_dir=d)
    assert stopped.returncode == 0, stopped.stderr


def test_a_crashed_node_goes_down_and_comes_back_and_stop_spares_the_others(second_cluster):
    """start beside the shared cluster (other ports, since those are taken); crash-node makes
    the node down in slurmctld's eyes, start-node brings it back; stop leaves the shared
    cluster and the one-node one running."""
    one_node_before = one_node_answers()
    started = script("start", multi_dir=second_cluster, HPCEXEC_SLURM_MULTI_PORTS="")
    assert started.returncode == 0, started.stderr
    assert not set(ports(second_cluster)) & set(ports())
    env = client_env(second_cluster)
    assert script("crash-node", "n2", multi_dir=second_cluster).returncode == 0
    took = wait_for("down", lambda: node_state("n2", env).startswith("down"), 60)
    assert not node_state("n2", client_env()).startswith("down")  # the shared cluster's n2
    back = script("start-node", "n2", multi_dir=second_cluster)
    assert back.returncode == 0, back.stderr
    assert node_state("n2", env) == "idle", f"down after {took:.0f} s, then not back"
    assert script("status", multi_dir=second_cluster).returncode == 0

    stopped = script("stop", multi_dir=second_cluster)
    assert stopped.returncode == 0, stopped.stderr
    assert our_daemons(second_cluster) == {}
    assert script("status").returncode == 0, "the shared cluster stopped with the second one"
    if one_node_before:
        assert one_node_answers(), "slurm_multinode.sh start/stop stopped the one-node cluster"
