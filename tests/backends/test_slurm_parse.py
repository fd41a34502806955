"""SLURM's parse and render functions against output recorded from the live SLURM 22.05
(tests/clusters/recorded/, each file naming the command that produced it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from recorded_output import read_output

from hpcexec.backends.base import SubmitSpec
from hpcexec.backends.slurm import SlurmBackend
from hpcexec.errors import SchedulerOutputError, SubmitError, TransportError
from hpcexec.resources import Resources
from hpcexec.states import JobState

RECORDED = Path(__file__).parent.parent / "clusters" / "recorded"
slurm = SlurmBackend()


def recorded(name: str) -> str:
    return read_output(RECORDED / name)


def test_submit_output():
    assert slurm.parse_submit(recorded("slurm_sbatch_submit.txt")) == "33"
    assert slurm.parse_submit(recorded("slurm_sbatch_parsable.txt")) == "34"
    assert slurm.parse_submit(recorded("slurm_sbatch_array_submit.txt")) == "35"
    with pytest.raises(SubmitError):
        slurm.parse_submit(recorded("slurm_sbatch_invalid_partition.txt"))


def test_squeue_pending_and_running():
    got = slurm.parse_status(recorded("slurm_squeue_pending_running.txt"), "", 0)
    assert got["37"].state is JobState.RUNNING and got["38"].state is JobState.RUNNING
    assert got["48"].state is JobState.PENDING and got["48"].reason == "Resources"
    assert got["49"].state is JobState.HELD
    assert got["50"].reason == "Dependency"
    assert got["52_[0-3]"].state is JobState.PENDING


def test_a_job_completing_is_running_and_ending():
    # after scancel, or a job's own end, SLURM lists it COMPLETING while its processes end:
    # how it ended is not known yet, so its exit-code file does not decide (schedstatus)
    running = slurm.parse_status(recorded("slurm_squeue_O_pending_running.txt"), "", 0)
    assert running["1963"].ending is False
    got = slurm.parse_status(recorded("slurm_squeue_O_completing_after_scancel.txt"), "", 0)
    assert (got["8424"].state, got["8424"].ending) == (JobState.RUNNING, True)


def test_squeue_finished_states_and_reasons():
    got = slurm.parse_status(recorded("slurm_squeue_all_states_after_finish.txt"), "", 0)
    assert got["34"].state is JobState.COMPLETED
    assert got["33"].state is JobState.FAILED
    assert [got[f"35_{i}"].state for i in range(10)] == [JobState.COMPLETED] * 10
    never = slurm.parse_status(recorded("slurm_squeue_dependency_never_satisfied.txt"), "", 0)
    assert never["50"].reason == "DependencyNeverSatisfied"
    held = slurm.parse_status(recorded("slurm_squeue_launch_failed_requeued_held.txt"), "", 0)
    assert held["23"].state is JobState.HELD


def test_squeue_says_how_a_finished_job_ended():
    # slurmctld's wait status of the batch script, in the same answer as the state: a job
    # killed by a signal is told from the queue alone, while accounting may not have its
    # end yet (slurm_sacct_end_not_yet_recorded.txt).
    got = slurm.parse_status(recorded("slurm_squeue_O_exit_codes.txt"), "", 0)
    ends = {j: (st.state, st.exit_code, st.signal) for j, st in got.items()}
    assert ends == {
        "1827": (JobState.TIMEOUT, 0, 15),
        "1828": (JobState.CANCELLED, 0, 15),
        "1829": (JobState.CANCELLED, 143, None),
        "1830": (JobState.FAILED, 3, None),
        "1831": (JobState.COMPLETED, 0, None),
        "1832": (JobState.FAILED, 0, 9),
    }
    assert got["1827"].reason == "walltime exceeded" and got["1832"].nodelist == "vm"
    acct = slurm.parse_accounting(recorded("slurm_sacct_exit_codes_steps.txt"))
    assert (acct["1832"].exit_code, acct["1832"].signal) == (0, 9)  # the same, settled
    assert (acct["1830"].exit_code, acct["1830"].signal) == (3, None)


def test_accounting_can_lag_behind_the_queue():
    queue = slurm.parse_status(recorded("slurm_squeue_kill9_just_ended.txt"), "", 0)["1670"]
    acct = slurm.parse_accounting(recorded("slurm_sacct_end_not_yet_recorded.txt"))["1670"]
    assert queue.state is JobState.FAILED
    assert not acct.state.finished and acct.signal is None


def test_squeue_format_pending_running_held():
    got = slurm.parse_status(recorded("slurm_squeue_O_pending_running.txt"), "", 0)
    assert got["1963"].state is JobState.RUNNING and got["1963"].nodelist == "vm"
    assert got["1964"].state is JobState.HELD and got["1967_2"].state is JobState.HELD
    assert got["1965"].reason == "Dependency" and got["1966"].reason == "BeginTime"
    assert all(st.exit_code is None and st.signal is None for st in got.values())


def test_squeue_asks_for_the_exit_status():
    argv = slurm.status_argv(["7"])
    assert argv[:7] == [
        "squeue",
        "-h",
        "-r",
        "-t",
        "all",
        "-O",
        "JobArrayID:|,State:|,Reason:|,NodeList:|,exit_code:|",
    ]


def test_squeue_unknown_ids_and_failure():
    assert slurm.parse_status("", recorded("slurm_squeue_invalid_job_id.txt"), 1) == {}
    assert slurm.parse_status(recorded("slurm_squeue_finished_without_t.txt"), "", 0) == {}
    with pytest.raises(SchedulerOutputError, match="Unable to contact"):
        slurm.parse_status("", "slurm_load_jobs error: Unable to contact slurm controller", 1)


def test_garbled_squeue_output_is_a_scheduler_output_error_not_a_transport_error():
    with pytest.raises(SchedulerOutputError, match="unreadable line") as e:
        slurm.parse_status("12|RUNNING|None|vm|0:0\n\x00garbage\n", "", 0)
    assert not isinstance(e.value, TransportError)


def test_sacct_final_states_exit_codes_and_memory():
    failed = slurm.parse_accounting(recorded("slurm_sacct_failed_steps.txt"))["33"]
    assert (failed.state, failed.exit_code, failed.signal) == (JobState.FAILED, 3, None)
    timeout = slurm.parse_accounting(recorded("slurm_sacct_timeout_steps.txt"))["37"]
    assert timeout.state is JobState.TIMEOUT and timeout.reason == "walltime exceeded"
    assert timeout.elapsed == 67
    cancelled = slurm.parse_accounting(recorded("slurm_sacct_cancelled_steps.txt"))["38"]
    assert cancelled.state is JobState.CANCELLED
    rss = slurm.parse_accounting(recorded("slurm_sacct_steps_maxrss.txt"))["36"]
    assert rss.state is JobState.COMPLETED and rss.max_rss == 215 and rss.nodelist == "vm"
    assert rss.cpu_seconds is None  # recorded before TotalCPU was asked for
    cpu = slurm.parse_accounting(recorded("slurm_sacct_total_cpu.txt"))["13001"]
    assert (cpu.cpu_seconds, cpu.max_rss, cpu.elapsed) == (0.911, 205, 3)
    array = slurm.parse_accounting(recorded("slurm_sacct_array.txt"))
    assert sorted(array) == sorted(f"35_{i}" for i in range(10))
    pending = slurm.parse_accounting(recorded("slurm_sacct_running_pending.txt"))
    assert pending["48"].state is JobState.PENDING and pending["48"].nodelist is None
    assert slurm.parse_accounting(recorded("slurm_sacct_unknown_job.txt")) == {}


def test_query_ids_ask_for_whole_arrays():
    argv = slurm.status_argv(["12_3", "12_4", "9"])
    assert argv[-1] == "9,12"


def test_directives_render_the_resource_model():
    res = Resources.create(
        queue="debug",
        account="proj",
        time="1-02:03:04",
        nodes=2,
        ppn=4,
        threads=8,
        mem="4GB",
        gpus=1,
        native=["--exclusive", "#SBATCH --x=1"],
    )
    spec = SubmitSpec(
        "/s.sh",
        res,
        "my job",
        "/o/out",
        "/o/err",
        "/work dir",
        array_size=10,
        array_limit=3,
        hold=True,
        after=("5", "6"),
    )
    lines = slurm.directives(spec)
    assert lines == [
        "#SBATCH --job-name='my job'",
        "#SBATCH --output=/o/out",
        "#SBATCH --error=/o/err",
        "#SBATCH --chdir='/work dir'",
        "#SBATCH --partition=debug",
        "#SBATCH --account=proj",
        "#SBATCH --time=1-02:03:04",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=4096M",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --array=0-9%3",
        "#SBATCH --hold",
        "#SBATCH --dependency=afterok:5:6",
        "#SBATCH --exclusive",
        "#SBATCH --x=1",
    ]


def test_max_array_from_config():
    assert slurm.parse_max_array("MaxArraySize            = 1001\n") == 1000
    assert slurm.parse_max_array("nothing here") is None


def test_memory_kill_is_read_from_slurmstepds_words():
    said = SlurmBackend().memory_kill(recorded("slurm_stderr_over_memory_kill.txt"))
    assert said == "StepId=26055.batch exceeded memory limit (646111232 > 209715200), being killed"
    # The form the task/cgroup plugin uses (not installed here: no cgroups in the test SLURM).
    cgroup = (
        "slurmstepd: error: Detected 1 oom-kill event(s) in StepId=7.batch. Some of your "
        "processes may have been killed by the cgroup out-of-memory handler.\n"
    )
    assert SlurmBackend().memory_kill(cgroup).startswith("Detected 1 oom-kill event(s)")
    assert SlurmBackend().memory_kill("my code: exceeded memory limit\nKilled\n") is None
