"""retries on the live three-node SLURM: a node of a 2-node job crashes (a cluster of the
test's own, so that the shared one never loses a node); the job runs again on the others
under the same future."""

from __future__ import annotations

import subprocess
import time

import jobfns
import pytest
from livecluster import _executor
from multinode import client_env, script

pytestmark = pytest.mark.slurm_multinode


@pytest.fixture
def own_cluster(tmp_path, slurm_multinode, monkeypatch):
    """A three-node cluster of this test (its own directory and ports), its client
    variables exported; stopped at the end."""
    d = tmp_path / "mn"
    started = script("start", multi_dir=d, HPCEXEC_SLURM_MULTI_PORTS="")
    assert started.returncode == 0, started.stderr
    env = client_env(d)
    for name in ("SLURM_CONF", "OMPI_MCA_btl_tcp_if_include", "OMPI_MCA_oob_tcp_if_include"):
        monkeypatch.setenv(name, env[name])
    yield d, env
    stopped = script("stop", multi_dir=d)
    assert stopped.returncode == 0, stopped.stderr


def test_a_crashed_node_does_not_fail_a_job_with_a_retry(own_cluster, tmp_path):
    d, env = own_cluster
    gen = _executor("slurm", tmp_path / "cache", time="0:10:00")
    ex = next(gen)
    try:
        # --no-requeue: SLURM's own requeue on a node failure would hide hpcexec's retry
        f = ex.options(nodes=2, ppn=1, retries=1, native=["--no-requeue"]).submit(
            jobfns.sleep_then, 20, "done"
        )
        deadline = time.monotonic() + 60
        nodes = ""
        while not nodes.startswith("n") and time.monotonic() < deadline:
            nodes = subprocess.run(
                ["squeue", "-h", "-t", "R", "-o", "%N"], capture_output=True, text=True, env=env
            ).stdout.strip()
            time.sleep(0.5)
        assert nodes, "the job never ran"
        time.sleep(3)
        crashed = "n2" if "2" in nodes else "n3"
        assert script("crash-node", crashed, multi_dir=d).returncode == 0
        assert f.results(timeout=300) == ["done", "done"]
        (first,) = f.record.attempts  # the run the crash ended, kept
        assert first["reason"] == "node failure" and first["job_id"] != f.job_id
        assert f.info().attempts == (first["job_id"],)
    finally:
        for _ in gen:
            pass
