"""Jobs by key: Executor.attach, Executor.refresh and JobFuture.hold on the local backend."""

from __future__ import annotations

import concurrent.futures

import pytest
from jobfns import add, fail

import hpcexec
from hpcexec.errors import BackendError, JobFailed, UnknownJob
from hpcexec.record import JobRecord
from hpcexec.states import JobState


def test_attach_follows_a_record_another_executor_made(ex, cache):
    f = ex.submit(add, 2, 3)
    bad = ex.submit(fail, "attached")
    assert f.result(timeout=60) == 5
    with pytest.raises(ValueError):
        bad.result(timeout=60)
    with hpcexec.Executor(cache_dir=cache, profile="") as other:
        g = other.attach(f.key)
        assert g.result(timeout=10) == 5 and g.job_id == f.job_id
        with pytest.raises(ValueError, match="attached"):
            other.attach(bad.key).result(timeout=10)


def test_attach_refuses_unknown_keys_and_other_backends(ex, cache):
    with pytest.raises(UnknownJob, match=r"no job record 'nope'.*hpcexec jobs"):
        ex.attach("nope")
    with ex.store.write() as tx:
        tx.put(
            JobRecord(
                key="k1",
                backend="slurm",
                host="elsewhere",
                kind="shell",
                jobdir=str(cache / "jobs" / "k1"),
            )
        )
    with pytest.raises(BackendError, match=r"backend 'slurm' on elsewhere.*backend='slurm'"):
        ex.attach("k1")


def test_hold_keeps_a_queued_job_queued_until_release(ex):
    both = ex.options(threads=ex.session.backend.total_cores)
    first = both.submit_shell("sleep 1.5; echo first")
    second = both.submit_shell("echo second")
    assert second.state is JobState.PENDING  # waits for the cores
    assert second.hold() is True
    assert second.state is JobState.HELD
    assert first.result(timeout=60).stdout == "first\n"
    done, _ = concurrent.futures.wait([second], timeout=1.0)
    assert not done and second.state is JobState.HELD  # cores free, still held
    assert first.hold() is False  # it ran already
    assert second.release() is True
    assert second.result(timeout=60).stdout == "second\n"


def test_refresh_notices_an_end_no_future_waits_for(cache):
    with hpcexec.Executor(cache_dir=cache, profile="") as first:  # its monitor stops here
        f = first.submit_shell("exit 3")
        with pytest.raises(JobFailed):
            f.result(timeout=60)
    with hpcexec.Executor(cache_dir=cache, profile="") as other:
        # A running record whose process is gone: one pass judges it.
        with other.store.write() as tx:
            tx.update(f.key, state=JobState.RUNNING, exit_code=None, finished=None)
        assert other.refresh() is True
        assert other.store.get(f.key).state is JobState.FAILED
        assert other.refresh() is False
