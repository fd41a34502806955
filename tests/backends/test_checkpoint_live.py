"""Checkpointable jobs on live schedulers: preempted on the three-node SLURM (its ``low``
partition requeues a job that a ``high`` one needs the node of, sending SIGUSR2 first:
preempt_send_user_signal), and past a one-minute walltime on the one-node SLURM (a callable,
and a shell body that opts in) and on Grid Engine (-notify)."""

from __future__ import annotations

import subprocess
import time

import jobfns
import pytest

from hpcexec import JobState

SLEEP = ("--wrap", "sleep 2")


def wait_until(what, check, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not {what} after {timeout} s"
        time.sleep(0.2)


@pytest.mark.slurm_multinode
def test_a_preempted_checkpointable_job_resumes_from_its_state(mex, slurm_multinode, tmp_path):
    counter = jobfns.Counter()
    # the whole of n1 (2 CPUs), in the partition that high-priority jobs preempt
    f = mex.options(queue="low", threads=2, native=["--nodelist=n1"], requeue=3).submit(
        counter, 40, 0.25
    )
    wait_until("running", lambda: f.record.state is JobState.RUNNING)
    time.sleep(3)  # some progress to keep
    high = subprocess.run(
        ["sbatch", "--parsable", "-p", "high", "-w", "n1", "-c", "2", "-o", "/dev/null", *SLEEP],
        capture_output=True,
        text=True,
        env=slurm_multinode,
        check=True,
    )
    assert high.stdout.strip()
    count, starts = f.result(timeout=240)
    assert count == 40 and starts >= 2  # resumed with its count, not started over
    assert f.info().requeues >= 1
    # it checkpointed and ended; hpcexec submitted it again under the same record
    assert [a["reason"].startswith("checkpointed") for a in f.record.attempts] == [True]


@pytest.mark.slurm
def test_work_of_100_s_completes_under_a_one_minute_walltime_through_checkpoints(sex):
    f = sex.options(time="0:01:00", requeue=5, checkpoint_grace=30).submit(
        jobfns.Counter(), 100, 1.0
    )
    count, starts = f.result(timeout=600)
    assert count == 100 and starts >= 2
    assert f.info().requeues == starts - 1
    assert all(a["reason"].startswith("checkpointed") for a in f.record.attempts)


@pytest.mark.slurm
def test_a_restartable_shell_body_of_100_s_completes_under_a_one_minute_walltime(sex, tmp_path):
    """A shell job opting in (requeue): SIGUSR2 30 s ahead of the walltime reaches its
    script (the batch shell), which stops the body; it runs again from its progress file
    and sees ``$HPCEXEC_RESTART`` count its earlier runs."""
    progress = tmp_path / "progress"
    body = f"""echo "$HPCEXEC_RESTART" >> {progress}.runs
n=0; [ -f {progress} ] && read -r n < {progress}
while [ "$n" -lt 100 ]; do sleep 1; n=$((n + 1)); echo "$n" > {progress}; done
echo "done at $n"
"""
    f = sex.options(time="0:01:00", requeue=5, checkpoint_grace=30).submit_shell(body)
    assert "done at 100" in f.result(timeout=600).stdout
    runs = [int(x) for x in (tmp_path / "progress.runs").read_text().split()]
    assert len(runs) >= 2 and runs == list(range(len(runs)))
    assert f.info().requeues == len(runs) - 1
    assert [a["reason"].startswith("checkpointed") for a in f.record.attempts] == [True] * (
        len(runs) - 1
    )


@pytest.mark.sge
def test_grid_engine_notify_checkpoints_a_job_at_its_walltime(gex):
    """-notify: SIGUSR2 when h_rt is reached, SIGKILL the queue's notify time (60 s) later."""
    f = gex.options(time="0:01:00", requeue=3).submit(jobfns.Counter(), 80, 1.0)
    count, starts = f.result(timeout=600)
    assert count == 80 and starts >= 2
    assert f.info().requeues == starts - 1
