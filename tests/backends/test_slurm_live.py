"""The SLURM backend against the live SLURM that tests/clusters/slurm.sh starts."""

from __future__ import annotations

import concurrent.futures as cf
import subprocess
import time

import jobfns
import pytest

from hpcexec import JobFailed, JobState

pytestmark = pytest.mark.slurm


def test_callable_runs_as_a_slurm_job(sex):
    f = sex.submit(jobfns.env, "SLURM_JOB_ID", "HPCEXEC_JOB_ID", "HPCEXEC_NODELIST")
    got = f.result(timeout=120)
    assert f.job_id.isdigit()
    assert got["SLURM_JOB_ID"] == got["HPCEXEC_JOB_ID"] == f.job_id
    assert got["HPCEXEC_NODELIST"]
    assert f.record.backend == "slurm" and f.state is JobState.COMPLETED


def test_dependency_orders_jobs_and_a_failed_one_cancels_dependents(sex, tmp_path):
    log = tmp_path / "order"
    first = sex.submit_shell(f"sleep 2; echo first >> {log}")
    second = sex.options(after=first).submit_shell(f"echo second >> {log}")
    assert second.result(timeout=120).returncode == 0
    assert log.read_text() == "first\nsecond\n"
    bad = sex.submit_shell("exit 1")
    dependent = sex.options(after=bad).submit_shell("echo never")
    with pytest.raises(JobFailed) as info:
        dependent.result(timeout=120)
    assert info.value.state is JobState.CANCELLED


def test_hold_and_release(sex):
    f = sex.options(hold=True).submit(jobfns.double, 8)
    deadline = time.monotonic() + 30
    while not f.job_id and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    assert f.state is JobState.HELD
    out = subprocess.run(
        ["squeue", "-h", "-o", "%r", "-j", f.job_id], capture_output=True, text=True
    )
    assert "JobHeldUser" in out.stdout
    assert f.release() is True
    assert f.result(timeout=120) == 16


def test_cancel_pending(sex):
    held = sex.options(hold=True).submit(jobfns.double, 9)
    deadline = time.monotonic() + 30
    while not held.job_id and time.monotonic() < deadline:
        time.sleep(0.1)
    assert held.cancel() is True
    with pytest.raises(cf.CancelledError):
        held.result(timeout=5)
    # scancel from outside: tests/faults/test_outages.py (with the number of polls it takes)


def test_walltime_kill_is_timeout(sex):
    f = sex.options(time="0:01").submit_shell("sleep 300")
    with pytest.raises(JobFailed) as info:
        f.result(timeout=240)
    assert info.value.state is JobState.TIMEOUT
    assert "walltime" in (info.value.reason or "")


def test_info_from_accounting(sex):
    f = sex.submit(jobfns.sleep_then, 1.5, "x")
    assert f.result(timeout=120) == "x"
    info = f.info()
    assert info.state is JobState.COMPLETED and info.exit_code == 0 and not info.was_aborted
    assert info.nodelist and info.wallclock >= 1
    assert info.max_rss_mb and info.max_rss_mb > 1


def test_future_argument_becomes_an_afterok_dependency(sex):
    a = sex.submit(jobfns.sleep_then, 2, 20)
    b = sex.submit(jobfns.add, a, b=1)
    assert b.result(timeout=120) == 21
    script = b.record.path.parent.parent / "jobs" / b.key / "job.sh"
    assert b.record.deps == [a.key] and script.exists()


def test_array_limit_caps_running_elements(sex):
    fs = list(sex.options(array_limit=2).map(jobfns.sleep_then, [1.0] * 6, range(6)))
    assert fs == list(range(6))
    script = next((sex.cache_dir / "arrays").iterdir()) / "submit.sh"
    assert "#SBATCH --array=0-5%2" in script.read_text()


def test_adopt_follows_a_job_started_outside_hpcexec(sex, tmp_path):
    out = tmp_path / "outside.out"
    job_id = subprocess.run(
        ["sbatch", "--parsable", f"--output={out}", "--wrap", "sleep 1; echo from outside"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    f = sex.adopt(job_id, name="outside")
    assert (f.key, f.record.name, f.job_id) == (f"slurm-{job_id}", "outside", job_id)
    assert f.result(timeout=120).stdout == "from outside\n"
    assert f.info().exit_code == 0 and f.state is JobState.COMPLETED
    assert sex.adopt(job_id).key == f.key  # the same record


def test_a_map_over_a_range_is_a_bulk_job(sex, tmp_path):
    """DRMAA's bulk jobs as one array: each element sees its own value of the range as
    HPCEXEC_ARRAY_INDEX and writes to its own {array_index} file."""
    out = sex.options(stdout=str(tmp_path / "bulk.{array_index}.out"))
    assert list(out.map(jobfns.print_index, range(3, 12, 4), timeout=180)) == ["3", "7", "11"]
    for i in (3, 7, 11):
        assert (tmp_path / f"bulk.{i}.out").read_text() == f"index {i}\n"
