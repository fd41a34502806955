"""The ``live`` fixture: each live scheduler that tests/clusters/ starts (SLURM, Grid Engine,
and the same SLURM through the loopback sshd), for the tests that every backend shares."""

from __future__ import annotations

import pytest

LIVE = {
    "slurm": dict(
        fixture="sex",
        submit="sbatch",
        status="squeue",
        bad_queue="nosuchpartition",
        refusal="Invalid partition",
    ),
    "sge": dict(
        fixture="gex",
        submit="qsub",
        status="qstat",
        bad_queue="nosuchqueue",
        refusal="unknown queue",
    ),
    # the same SLURM, driven from "another machine" through the loopback sshd
    "slurm-ssh": dict(
        fixture="rex",
        submit="sbatch",
        status="squeue",
        bad_queue="nosuchpartition",
        refusal="Invalid partition",
        backend="slurm",
        marks=("slurm", "ssh"),
    ),
}


@pytest.fixture(
    params=[
        pytest.param(
            name, marks=[getattr(pytest.mark, m) for m in LIVE[name].get("marks", (name,))]
        )
        for name in LIVE
    ]
)
def live(request):
    """(executor, facts) for each live scheduler; facts["connect"] are the options that
    reach it (host and SSH options for the remote one)."""
    spec = LIVE[request.param]
    connect = request.getfixturevalue("remote_options") if spec["fixture"] == "rex" else {}
    return request.getfixturevalue(spec["fixture"]), {
        "backend": request.param,
        **spec,
        "connect": connect,
    }
