"""Multi-task callables through srun on the live one-node SLURM (tests/clusters/slurm.sh)."""

from __future__ import annotations

import jobfns
import pytest

pytestmark = pytest.mark.slurm


def test_two_tasks_through_srun(sex):
    f = sex.options(nodes=1, ppn=2).submit(jobfns.task_and_env)
    values = f.results(timeout=180)
    assert [t["rank"] for t, _ in values] == [0, 1]
    for rank, (t, env) in enumerate(values):
        assert env["RANK"] == str(rank) and env["WORLD_SIZE"] == "2"
        assert t["master_port"] == int(env["MASTER_PORT"]) == values[0][0]["master_port"]
    assert f.result() == values[0]


def test_a_failing_rank_kills_the_other_through_srun(sex):
    f = sex.options(nodes=1, ppn=2).submit(jobfns.rank_fails, 0, 300)
    with pytest.raises(ValueError, match="rank 0 failed") as info:
        f.result(timeout=120)
    assert info.value.task_rank == 0
