from __future__ import annotations

import pytest

from livecluster import _executor, _live


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
