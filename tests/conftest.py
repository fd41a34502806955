from __future__ import annotations

import sys

import pytest
from livecluster import _executor, _live, heal_stale_pyenv_lock
from multinode import client_env
from sshtest import DEST, KEY, KNOWN


@pytest.fixture(autouse=True)
def _no_stale_pyenv_lock():
    heal_stale_pyenv_lock()


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def ex(cache):
    """A local executor."""
    yield from _executor("local", cache)


@pytest.fixture(scope="session")
def slurm_cluster():
    _live("slurm")


@pytest.fixture(scope="session")
def sge_cluster():
    _live("sge")


@pytest.fixture
def sex(slurm_cluster, cache):
    """A SLURM executor, polling fast."""
    yield from _executor("slurm", cache, time="0:10:00")


@pytest.fixture
def gex(sge_cluster, cache):
    """A Grid Engine executor, polling fast."""
    yield from _executor("sge", cache, time="0:10:00")


@pytest.fixture(scope="session")
def slurm_multinode():
    """The client environment of the three-node SLURM of tests/clusters/slurm_multinode.sh
    (``os.environ`` plus its ``SLURM_CONF`` and OpenMPI's loopback settings): pass it as
    ``env=`` to SLURM commands. Skips (fails under CI) when that cluster does not take a
    3-node job."""
    _live("slurm_multinode")
    return client_env()


@pytest.fixture
def mex(slurm_multinode, cache, monkeypatch):
    """A SLURM executor on the three-node cluster: its client variables exported, as a user
    of that cluster would have them (its SLURM_CONF; OpenMPI on loopback)."""
    for name in ("SLURM_CONF", "OMPI_MCA_btl_tcp_if_include", "OMPI_MCA_oob_tcp_if_include"):
        monkeypatch.setenv(name, slurm_multinode[name])
    yield from _executor("slurm", cache, time="0:10:00")


@pytest.fixture(scope="session")
def sshd():
    _live("sshd")


@pytest.fixture
def remote_options(sshd, tmp_path):
    """Executor options for jobs on the loopback sshd's host, with job files under a path
    with a space and quotes."""
    return dict(
        host=DEST,
        ssh_key=str(KEY),
        known_hosts=str(KNOWN),
        python=sys.executable,
        remote_dir=str(tmp_path / "remote 'job' files"),
    )


@pytest.fixture
def rex(slurm_cluster, remote_options, cache):
    """A SLURM executor driving the login node over SSH (loopback), polling fast."""
    yield from _executor("slurm", cache, time="0:10:00", **remote_options)
