"""Jobs that run again under the same record and future (hpcexec/attempts.py): ``retries``
for ends outside the job's code, ``retry_exit_codes``; what does not run again."""

from __future__ import annotations

import os
import signal
import time

import jobfns
import pytest

from hpcexec import JobFailed, JobState, ResourceError
from hpcexec.attempts import attempt_dir, delay, next_run, outside_cause
from hpcexec.backends.base import SubmitSpec
from hpcexec.backends.lsf import LsfBackend
from hpcexec.backends.pbspro import PbsProBackend
from hpcexec.backends.sge import SgeBackend
from hpcexec.backends.slurm import SlurmBackend
from hpcexec.backends.torque import TorqueBackend
from hpcexec.checkpoint import REQUEUED_REASON
from hpcexec.record import JobRecord
from hpcexec.resources import Resources


def test_a_job_killed_from_outside_runs_again_under_the_same_future(ex, tmp_path):
    marker = tmp_path / "ran"
    f = ex.options(retries=1).submit(jobfns.killed_first_time, str(marker), 42)
    assert f.result(timeout=60) == 42
    rec = f.record
    assert rec.state is JobState.COMPLETED and len(rec.attempts) == 1
    first = rec.attempts[0]
    assert first["state"] == "failed" and first["signal"] == signal.SIGKILL
    assert first["job_id"] and first["job_id"] != rec.job_id
    assert os.path.exists(os.path.join(rec.jobdir, attempt_dir(1), "started"))
    assert f.info().attempts == (first["job_id"],)


def test_without_retries_the_kill_fails_the_future(ex, tmp_path):
    f = ex.submit(jobfns.killed_first_time, str(tmp_path / "ran"), 42)
    with pytest.raises(JobFailed):
        f.result(timeout=60)
    assert f.record.attempts == []


def test_an_exception_is_the_jobs_own_and_never_runs_again(ex, tmp_path):
    counter = tmp_path / "runs"
    f = ex.options(retries=3).submit(jobfns.count_run, counter, "x")  # "x" * 10: fine
    assert f.result(timeout=60) == "x" * 10
    g = ex.options(retries=3).submit(jobfns.fail, "mine")
    with pytest.raises(ValueError, match="mine"):
        g.result(timeout=60)
    assert g.record.attempts == []


def test_retry_exit_codes_run_a_shell_job_again_until_retries_are_spent(ex, tmp_path):
    counter = tmp_path / "n"
    body = f"echo x >> {counter}; exit 3"
    f = ex.options(retries=1, retry_exit_codes=[3]).submit_shell(body)
    with pytest.raises(JobFailed):
        f.result(timeout=90)
    assert counter.read_text().count("x") == 2  # the first run and one retry
    assert [a["exit_code"] for a in f.record.attempts] == [3]
    assert f.record.exit_code == 3


def test_a_terminated_job_is_not_run_again(ex, tmp_path):
    f = ex.options(retries=2).submit(jobfns.sleep_then, 60)
    deadline = time.monotonic() + 30
    while f.record.state is not JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    f.terminate()
    with pytest.raises(JobFailed):
        f.result(timeout=60)
    assert f.record.attempts == []


@pytest.mark.parametrize(
    "end, why",
    [
        (dict(state=JobState.LOST, reason="left the queue"), "left the queue"),
        (dict(state=JobState.FAILED, reason="node failure"), "node failure"),
        (dict(state=JobState.FAILED, reason="preempted"), "preempted"),
        (dict(state=JobState.FAILED, signal=9, reason="killed by signal 9"), "killed by signal 9"),
        (dict(state=JobState.FAILED, signal=9, reason="out of memory: oom-kill"), None),
        (dict(state=JobState.FAILED, signal=11, reason="killed by signal 11"), None),
        (dict(state=JobState.FAILED, exit_code=1, reason="raised ValueError"), None),
        (dict(state=JobState.TIMEOUT, signal=15, reason="walltime"), None),
        (dict(state=JobState.CANCELLED, reason="terminated on request"), None),
        (dict(state=JobState.COMPLETED, exit_code=0), None),
    ],
)
def test_which_ends_are_outside_the_jobs_code(end, why):
    rec = JobRecord("k", "slurm", "h", "call", "/tmp/k", resources={"retries": 1})
    assert outside_cause(rec, end) == why


@pytest.mark.parametrize("kind", ["shell", "call"])
def test_a_job_killed_by_its_warning_before_it_started_is_requeued(kind):
    # SLURM may send --signal up to a minute early: seen at the job's launch, before the
    # script's first line ignores it (slurmd: "task 0 died by signal: 12").
    rec = JobRecord("k", "slurm", "h", kind, "/tmp/k", job_id="7", resources={"requeue": 2})
    end = dict(state=JobState.FAILED, exit_code=0, signal=signal.SIGUSR2.value, reason="")
    again = next_run(rec, end)
    assert again["state"] is JobState.PENDING
    assert again["attempts"][0]["reason"].startswith("checkpointed before it started")
    plain = JobRecord("k", "slurm", "h", kind, "/tmp/k", job_id="7", resources={})
    assert next_run(plain, end) == end  # no warning asked for: a kill like another
    took = dict(end, exit_code=140, reason=REQUEUED_REASON)  # the script took it: its own words
    assert next_run(rec, took)["attempts"][0]["reason"] == REQUEUED_REASON


def test_the_delay_grows_from_none():
    assert [delay(n) for n in (1, 2, 3, 4)] == [0.0, 15.0, 30.0, 60.0]
    assert delay(20) == 600.0


@pytest.mark.parametrize(
    "options",
    [dict(retries=-1), dict(retries=True), dict(retries="2"), dict(retry_exit_codes=[0])],
)
def test_bad_retry_options_are_refused_when_given(ex, options):
    with pytest.raises(ResourceError, match="retr"):
        ex.options(**options)


def test_a_checkpointable_job_goes_on_from_its_state_past_its_walltime(ex):
    """Work of ~6 s under a walltime of 3 s: warned 2 s ahead, checkpointed, requeued under
    the same future, twice or more, and the count is right (the state was carried over)."""
    f = ex.options(time="0:00:03", requeue=5, checkpoint_grace=2).submit(jobfns.Counter(), 60, 0.1)
    count, starts = f.result(timeout=120)
    assert count == 60 and starts >= 3
    rec = f.record
    assert [a["reason"].startswith("checkpointed") for a in rec.attempts] == [True] * (starts - 1)
    assert f.info().requeues == starts - 1


def test_a_checkpointable_job_out_of_requeues_ends_timeout(ex):
    f = ex.options(time="0:00:02", requeue=1, checkpoint_grace=1).submit(
        jobfns.Counter(), 1000, 0.1
    )
    with pytest.raises(JobFailed, match="requeue=1"):
        f.result(timeout=60)
    assert f.record.state is JobState.TIMEOUT and len(f.record.attempts) == 1


def test_a_plain_callable_is_not_checkpointed(ex):
    f = ex.options(time="0:00:02", requeue=2, checkpoint_grace=1).submit(jobfns.sleep_then, 10)
    with pytest.raises(JobFailed):
        f.result(timeout=60)
    assert f.record.state is JobState.TIMEOUT and f.record.attempts == []


@pytest.mark.parametrize(
    "backend, wanted",
    [
        (SlurmBackend(), ["#SBATCH --signal=B:USR2@90", "#SBATCH --requeue"]),
        (LsfBackend(), ["#BSUB -wa USR2", "#BSUB -wt 2"]),
        (SgeBackend(), ["#$ -notify"]),
        (PbsProBackend(), []),  # PBS has no warning signal ahead of the walltime
        (TorqueBackend(), []),
    ],
)
def test_each_scheduler_asks_for_the_warning_its_own_way(backend, wanted):
    res = Resources.create(time="1:00:00")
    spec = SubmitSpec("/j/submit.sh", res, "n", "/j/out", "/j/err", "/w", warning=90)
    plain = SubmitSpec("/j/submit.sh", res, "n", "/j/out", "/j/err", "/w")
    added = [d for d in backend.directives(spec) if d not in backend.directives(plain)]
    assert added == wanted
