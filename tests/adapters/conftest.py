from __future__ import annotations

import pytest


@pytest.fixture(params=["local", pytest.param("slurm", marks=pytest.mark.slurm)])
def anyex(request):
    """The local executor, then the live SLURM one (marked slurm)."""
    return request.getfixturevalue("ex" if request.param == "local" else "sex")
