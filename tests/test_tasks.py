"""Multi-task callables (nodes x ppn tasks) on the local backend, the task environment, and
how each backend launches the tasks (issue 14, items 1 and 2)."""

from __future__ import annotations

import os
import time

import jobfns
import pytest

import hpcexec
from hpcexec import taskenv
from hpcexec.backends import lsf, pbspro, sge, slurm, torque
from hpcexec.backends.local import LocalBackend
from hpcexec.errors import BackendError
from hpcexec.resources import Resources

PPN = min(3, len(os.sched_getaffinity(0)))
needs_two = pytest.mark.skipif(PPN < 2, reason="needs two cores for two local tasks")


@needs_two
def test_a_callable_runs_in_every_task(ex):
    f = ex.options(ppn=PPN).submit(jobfns.task_rank)
    assert f.results(timeout=60) == list(range(PPN))
    assert f.result() == 0


@needs_two
def test_conventional_variables_agree_with_task(ex):
    values = ex.options(ppn=PPN).submit(jobfns.task_and_env).results(timeout=60)
    ports = set()
    for rank, (t, env) in enumerate(values):
        assert t["rank"] == rank == int(env["RANK"])
        assert t["local_rank"] == rank == int(env["LOCAL_RANK"])
        assert t["world_size"] == PPN == int(env["WORLD_SIZE"])
        assert (t["nodes"], t["node_rank"]) == (1, 0)
        assert t["master_port"] == int(env["MASTER_PORT"])
        assert t["master_addr"] == env["MASTER_ADDR"]
        ports.add(t["master_port"])
    assert len(ports) == 1  # chosen once per job


@needs_two
def test_a_failing_rank_fails_the_future_and_stops_the_others(ex):
    t0 = time.monotonic()
    f = ex.options(ppn=PPN).submit(jobfns.rank_fails, 1, 120)
    with pytest.raises(ValueError, match="rank 1 failed") as info:
        f.result(timeout=60)
    assert time.monotonic() - t0 < 60  # the sleeping ranks were stopped
    assert info.value.task_rank == 1
    with pytest.raises(ValueError):
        f.results()
    assert f.record.state is hpcexec.JobState.FAILED


def test_a_one_task_job_has_one_result(ex):
    f = ex.submit(jobfns.task_rank)
    assert f.results(timeout=60) == [f.result()] == [0]


def test_outside_a_multi_task_job_task_is_rank_0_of_1():
    assert taskenv.task({}) == taskenv.Task()
    assert taskenv.task({"SLURM_PROCID": "3", "SLURM_NTASKS": "4"}).rank == 0
    assert hpcexec.task().world_size == 1


@pytest.mark.parametrize(
    "env, rank, local, node",
    [
        ({"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NODEID": "2"}, 5, 1, 2),
        ({"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, 5, 1, 2),
        ({"PMI_RANK": "5"}, 5, 1, 2),
        ({"LSF_PM_TASKID": "6"}, 5, 1, 2),  # blaunch counts from 1
        ({"HPCEXEC_TASK_RANK": "5"}, 5, 1, 2),
    ],
)
def test_each_launchers_variables(env, rank, local, node):
    facts = {"HPCEXEC_NTASKS": "6", "HPCEXEC_NODES": "3", "HPCEXEC_PPN": "2"}
    t = taskenv.task({**facts, "HPCEXEC_MASTER_ADDR": "n1", "HPCEXEC_MASTER_PORT": "7", **env})
    assert (t.rank, t.local_rank, t.node_rank, t.world_size, t.nodes) == (rank, local, node, 6, 3)
    assert (t.master_addr, t.master_port) == ("n1", 7)
    out: dict[str, str] = {}
    taskenv.export(t, out)
    assert out["RANK"] == str(rank) and out["WORLD_SIZE"] == "6" and out["MASTER_PORT"] == "7"


def test_the_cache_key_differs_with_the_tasks(ex):
    one = ex.submit(jobfns.task_rank)
    two = ex.options(ppn=2).submit(jobfns.task_rank)
    assert one.key != two.key
    assert ex.options(ppn=2).submit(jobfns.task_rank).key == two.key


def test_a_multi_task_script_launches_then_writes_the_exit_code(ex):
    script = ex.job_script(jobfns.task_rank, ppn=2)
    assert "exec " not in script.split("cd ", 1)[1]  # the script outlives the launcher
    assert "-m hpcexec.launch port" in script
    assert " -m hpcexec.launch 2 -- " in script and " --tasks 2 1 2 " in script
    assert script.index("--tasks") < script.index("exitcode")
    single = ex.job_script(jobfns.task_rank)
    assert "hpcexec.launch" not in single and "--tasks" not in single


def test_a_shell_body_runs_once_with_the_tasks_placeholders(ex):
    f = ex.options(ppn=2).submit_shell("echo {ntasks} {nodes} {ppn}")
    assert f.result(timeout=60).stdout == "2 1 2\n"


@pytest.mark.parametrize(
    "backend, launcher",
    [
        (slurm.SlurmBackend(), ["srun", "--kill-on-bad-exit=1", "--ntasks=4"]),
        (pbspro.PbsProBackend(), ["mpiexec", "-n", "4"]),
        (torque.TorqueBackend(), ["mpiexec", "-n", "4"]),
        (sge.SgeBackend(), ["mpirun", "-np", "4"]),
        (lsf.LsfBackend(), ["blaunch"]),
        (LocalBackend(4), ["PY", "-m", "hpcexec.launch", "4", "--"]),
    ],
)
def test_each_backend_says_its_launcher(backend, launcher):
    assert backend.task_launcher(Resources.create(nodes=2, ppn=2), "PY") == launcher


def test_slurm_launcher_takes_the_mpi_flavour_and_the_threads():
    argv = slurm.SlurmBackend().task_launcher(Resources.create(ppn=2, threads=3, mpi="pmix"), "")
    assert argv == ["srun", "--kill-on-bad-exit=1", "--ntasks=2", "--mpi=pmix", "--cpus-per-task=3"]


def test_lsf_refuses_threads_that_would_multiply_the_tasks():
    with pytest.raises(BackendError, match="blaunch"):
        lsf.LsfBackend().task_launcher(Resources.create(ppn=2, threads=2), "")


def test_ntasks_placeholders():
    values = Resources.create(nodes=2, ppn=3).placeholders()
    assert (values["ntasks"], values["nodes"], values["ppn"]) == ("6", "2", "3")
    assert Resources.create().placeholders()["ntasks"] == "1"
