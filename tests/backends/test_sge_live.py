"""The Grid Engine backend against the live SGE 8.1.9 that tests/clusters/sge.sh starts."""

from __future__ import annotations

import concurrent.futures as cf
import subprocess
import time
from pathlib import Path

import jobfns
import pytest

from hpcexec import JobFailed, JobState

pytestmark = pytest.mark.sge


def _submitted(f, timeout=30):
    deadline = time.monotonic() + timeout
    while not f.job_id and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f.job_id


def _qstat_state(job_id: str) -> str | None:
    """The state column of plain ``qstat`` for a (non-array) job."""
    out = subprocess.run(["qstat"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        words = line.split()
        if words and words[0] == job_id:
            return words[4]
    return None


def test_callable_runs_as_an_sge_job(gex):
    f = gex.submit(
        jobfns.env, "JOB_ID", "HPCEXEC_JOB_ID", "HPCEXEC_NODELIST", "HPCEXEC_ARRAY_INDEX"
    )
    got = f.result(timeout=120)
    assert f.job_id.isdigit()
    assert got["JOB_ID"] == got["HPCEXEC_JOB_ID"] == f.job_id
    assert got["HPCEXEC_NODELIST"] and got["HPCEXEC_ARRAY_INDEX"] == ""
    assert f.record.backend == "sge" and f.state is JobState.COMPLETED


def test_soft_time_warns_the_job_with_sigusr1_and_it_goes_on(gex):
    """DRMAA's soft wallclock limit is s_rt: SIGUSR1 at it, which the job's script does not
    die of; a shell body's trap and a function's handler take it."""
    soft = gex.options(time="0:02:00", soft_time="0:00:03")
    shell = soft.submit_shell("trap 'echo warned; exit 0' USR1; sleep 100 & wait")
    call = soft.submit(jobfns.until_usr1, 100)
    assert shell.result(timeout=170).stdout == "warned\n"
    assert call.result(timeout=170) == "SIGUSR1"
    assert "#$ -l s_rt=00:00:03" in soft.job_script("true").splitlines()


def test_array_elements_see_their_own_ids(gex):
    n = 5
    own = gex.options(reuse_slots=False)  # each task in its own element
    fs = [
        own.submit(jobfns.env, "HPCEXEC_JOB_ID", "HPCEXEC_ARRAY_INDEX", "SGE_TASK_ID", f"X{i}")
        for i in range(n)
    ]
    got = [f.result(timeout=120) for f in fs]
    assert gex.session.calls["qsub"] == 1
    for f, g in zip(fs, got, strict=True):
        assert g["HPCEXEC_JOB_ID"] == f.job_id
        assert g["HPCEXEC_ARRAY_INDEX"] == str(f.record.array_index)
        assert g["SGE_TASK_ID"] == str(f.record.array_index + 1)


def test_array_shell_output_lands_in_each_jobs_files(gex):
    # One array: SGE names element output by $TASK_ID (1..n), the driver's links must agree.
    fs = [gex.submit_shell(f"echo out{i}; echo err{i} >&2") for i in range(4)]
    results = [f.result(timeout=120) for f in fs]
    assert gex.session.calls["qsub"] == 1
    assert [(r.stdout, r.stderr) for r in results] == [(f"out{i}\n", f"err{i}\n") for i in range(4)]


def test_memory_request_is_h_vmem_and_a_python_job_runs_under_it(gex):
    f = gex.options(mem="1G").submit(jobfns.double, 4)
    assert f.result(timeout=120) == 8
    script = f.record.jobdir + "/submit.sh"
    assert "#$ -l h_vmem=1024M" in Path(script).read_text()


def test_dependency_orders_jobs(gex, tmp_path):
    log = tmp_path / "order"
    first = gex.submit_shell(f"sleep 2; echo first >> {log}")
    second = gex.options(after=first).submit_shell(f"echo second >> {log}")
    assert second.result(timeout=120).returncode == 0
    assert log.read_text() == "first\nsecond\n"


def test_hold_and_release(gex):
    f = gex.options(hold=True).submit(jobfns.double, 8)
    _submitted(f)
    time.sleep(1.0)
    assert f.state is JobState.HELD
    assert _qstat_state(f.job_id) == "hqw"
    assert f.release() is True
    assert f.result(timeout=120) == 16


def test_cancel_pending(gex):
    held = gex.options(hold=True).submit(jobfns.double, 9)
    _submitted(held)
    assert held.cancel() is True
    with pytest.raises(cf.CancelledError):
        held.result(timeout=5)
    deadline = time.monotonic() + 30
    while _qstat_state(held.job_id) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _qstat_state(held.job_id) is None  # gone from the queue, not only from the future
    # qdel from outside: tests/faults/test_outages.py (with the number of polls it takes)


def test_walltime_kill_is_timeout(gex):
    f = gex.options(time="0:05").submit_shell("sleep 300")
    with pytest.raises(JobFailed) as info:
        f.result(timeout=120)
    assert info.value.state is JobState.TIMEOUT
    assert "walltime" in (info.value.reason or "")


def test_separate_jobs_leaving_together_are_judged_by_one_accounting_loop(gex):
    # Different resources: two submissions, two job numbers; qacct takes one number per call.
    a = gex.submit_shell("sleep 2; exit 3")
    b = gex.options(mem="900M").submit_shell("sleep 2; exit 4")
    for f, code in ((a, 3), (b, 4)):
        with pytest.raises(JobFailed) as info:
            f.result(timeout=120)
        assert info.value.state is JobState.FAILED and info.value.exit_code == code
    calls = gex.session.calls
    assert calls["qsub"] == 2 and calls["qacct"] + calls["sh"] >= 1, dict(calls)


def test_walltime_kill_of_a_taken_task_fails_that_task_only(gex):
    # Element 0 runs task 0 (which raises), takes task 2 from the tail and is killed at its
    # walltime in it. Task 0 had ended by itself, so it keeps its own error; task 1 gets its
    # own element afterwards.
    one = gex.options(time="0:08", array_limit=1)
    fs = [
        one.submit(jobfns.fail, "own error"),
        one.submit(jobfns.sleep_then, 0, 1),
        one.submit(jobfns.sleep_then, 100, 2),
    ]
    with pytest.raises(JobFailed) as info:
        fs[2].result(timeout=120)
    assert info.value.state is JobState.TIMEOUT
    with pytest.raises(ValueError, match="own error"):
        fs[0].result(timeout=60)
    assert fs[0].state is JobState.FAILED  # not the element's TIMEOUT
    assert fs[1].result(timeout=60) == 1
    assert fs[2].job_id == fs[0].job_id != fs[1].job_id
