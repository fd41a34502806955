"""A job that exhausts its memory limit: the future raises JobFailed, state failed, with a
reason that says so, and no other job is harmed."""

from __future__ import annotations

import jobfns
import pytest

from hpcexec import JobFailed, JobState, OutOfMemory


def _check_out_of_memory(f, limit_words: str) -> None:
    with pytest.raises(JobFailed) as info:
        f.result(timeout=180)
    err = info.value
    assert isinstance(err, OutOfMemory) and isinstance(err, MemoryError)
    assert err.state is JobState.FAILED and err.reason.startswith("out of memory")
    assert limit_words in err.reason, err.reason
    assert "use_memory" in err.__cause__.tb  # the remote traceback says where
    rec = f.record
    assert rec.state is JobState.FAILED and rec.reason == err.reason


def test_memory_error_under_a_limit_on_the_local_backend(ex):
    f = ex.submit(jobfns.use_memory, 1024, limit_mib=300)
    ok = ex.submit(jobfns.use_memory, 10)
    _check_out_of_memory(f, "300 MiB (RLIMIT_AS)")
    assert ok.result(timeout=60) == 10 * 2**20


@pytest.mark.sge
def test_memory_error_under_sge_h_vmem(gex):
    f = gex.options(mem="400M").submit(jobfns.use_memory, 1024)
    ok = gex.options(mem="400M").submit(jobfns.use_memory, 10)
    _check_out_of_memory(f, "400 MiB (RLIMIT_AS)")
    assert ok.result(timeout=120) == 10 * 2**20


@pytest.mark.slurm
def test_killed_by_slurm_for_passing_its_memory(sex):
    # The test SLURM enforces --mem by its accounting poll (JobAcctGatherParams=OverMemoryKill):
    # slurmstepd kills the job and says so in its stderr; no MemoryError is ever raised.
    f = sex.options(mem="200M").submit(jobfns.use_memory, 600, hold=30)
    ok = sex.options(mem="200M").submit(jobfns.use_memory, 10)
    with pytest.raises(OutOfMemory) as info:
        f.result(timeout=180)
    err = info.value
    assert err.state is JobState.FAILED
    assert err.reason.startswith("out of memory: ") and "exceeded memory limit" in err.reason
    assert f.record.reason == err.reason
    assert ok.result(timeout=120) == 10 * 2**20
