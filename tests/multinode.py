"""The three-node SLURM that tests/clusters/slurm_multinode.sh starts, as tests see it: where
it lives, the environment its client commands need, and running its script.

A SLURM command run without this cluster's ``SLURM_CONF`` talks to the one-node cluster of
tests/clusters/slurm.sh: pass :func:`client_env` as ``env=`` to every command (never change
``os.environ``, which the other tests share)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from livecluster import CLUSTERS

SCRIPT = CLUSTERS / "slurm_multinode.sh"
MULTI_DIR = Path(os.environ.get("HPCEXEC_SLURM_MULTI_DIR", "/var/lib/hpcexec-test-slurm-multi"))
NODES = ("n1", "n2", "n3")


def client_env(multi_dir: Path = MULTI_DIR) -> dict[str, str]:
    """``os.environ`` plus the cluster's client variables that ``start`` writes to
    ``<multi_dir>/env``: ``SLURM_CONF``, and the OpenMPI settings that make MPI use loopback
    (``OMPI_MCA_btl_tcp_if_include=lo``, ``OMPI_MCA_oob_tcp_if_include=lo``)."""
    env = dict(os.environ)
    for line in (multi_dir / "env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            env[key] = value
    return env


def ports(multi_dir: Path = MULTI_DIR) -> tuple[int, ...]:
    """The ports of the last ``start``: slurmctld's, then the slurmd of n1, n2, n3."""
    return tuple(int(p) for p in (multi_dir / "ports").read_text().split())


def script(
    command: str, *args: str, multi_dir: Path = MULTI_DIR, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``slurm_multinode.sh COMMAND ARGS`` for the cluster in ``multi_dir``."""
    return subprocess.run(
        ["bash", str(SCRIPT), command, *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HPCEXEC_SLURM_MULTI_DIR": str(multi_dir), **env},
        timeout=timeout,
    )


def node_state(node: str, env: dict[str, str]) -> str:
    """The node's state as ``sinfo`` prints it (``idle``, ``down*``, ...)."""
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-n", node, "-o", "%T"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=30,
    ).stdout.split()
    return out[0] if out else ""


def need_mpi4py() -> None:
    """Go on if mpi4py imports (in this interpreter, which the jobs run too); else fail under
    CI (tests/run.sh installs it) and skip elsewhere, saying how to install it."""
    done = subprocess.run([sys.executable, "-c", "import mpi4py.MPI"], capture_output=True)
    if done.returncode == 0:
        return
    why = (
        "mpi4py does not import: install it against the system OpenMPI that "
        "slurm_multinode.sh installs: pip install --no-binary mpi4py '.[mpi]'"
    )
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)
