"""The local backend's core-aware queue."""
from __future__ import annotations

import os
import time

import pytest

import jobfns
from hpcexec import BackendError, JobFailed, JobState
from hpcexec.jobfiles import EXITCODE


def _intervals(path):
    return [tuple(map(float, line.split())) for line in path.read_text().splitlines()]


def _overlap(a, b):
    return a[0] < b[1] and b[0] < a[1]


def test_jobs_using_every_core_run_one_at_a_time(ex, tmp_path):
    cores = ex._core.backend.total_cores
    log = tmp_path / "intervals"
    fs = [ex.options(threads=cores).submit(jobfns.record_interval, str(log), 0.3 + i / 1000)
          for i in range(3)]
    assert all(f.result(timeout=60) >= 0.3 for f in fs)
    spans = _intervals(log)
    assert len(spans) == 3
    for i, a in enumerate(spans):
        for b in spans[i + 1 :]:
            assert not _overlap(a, b), spans


def test_one_core_jobs_fill_every_core(ex, tmp_path):
    cores = ex._core.backend.total_cores
    if cores < 2:
        pytest.skip("needs a machine with at least 2 cores")
    log = tmp_path / "intervals"
    fs = [ex.submit(jobfns.record_interval, str(log), 1.0 + i / 1000) for i in range(cores)]
    [f.result(timeout=60) for f in fs]
    spans = _intervals(log)
    assert all(_overlap(spans[0], s) for s in spans[1:]), spans


def test_small_job_backfills_while_a_big_one_waits(ex, tmp_path):
    cores = ex._core.backend.total_cores
    if cores < 2:
        pytest.skip("needs a machine with at least 2 cores")
    long_log, big_log, small_log = (tmp_path / n for n in ("long", "big", "small"))
    long = ex.submit(jobfns.record_interval, str(long_log), 1.5)
    big = ex.options(threads=cores).submit(jobfns.record_interval, str(big_log), 0.2)
    small = ex.submit(jobfns.record_interval, str(small_log), 0.2)
    for f in (long, big, small):
        f.result(timeout=60)
    (lt,), (bt,), (st,) = _intervals(long_log), _intervals(big_log), _intervals(small_log)
    assert _overlap(lt, st), "the small job should start beside the long one"
    assert bt[0] >= lt[1] and not _overlap(bt, st), "the big job needs every core"


def test_job_larger_than_the_machine_is_refused(ex):
    cores = ex._core.backend.total_cores
    with pytest.raises(BackendError, match=f"has {cores}"):
        ex.options(threads=cores + 1)
    with pytest.raises(BackendError, match="nodes"):
        ex.options(nodes=2)


def test_job_terminated_while_being_looked_at_ends_cancelled(ex, tmp_path):
    # The race of a joblib abort: a poll reads the running record, terminate() marks it and
    # kills it, and the poll then finds the exit code of the kill. Cancelled, not failed.
    queue = ex._core.queue
    f = ex.submit(jobfns.sleep_then, 60)
    wait = time.monotonic() + 30
    while ex.store.get(f.key).state is not JobState.RUNNING:
        assert time.monotonic() < wait, "the job never started"
        time.sleep(0.05)
    real_look = queue._look

    def look_after_terminate(rec, now):
        if rec.key == f.key and rec.reason is None:
            assert queue.terminate(rec.key)
            exit_file = os.path.join(rec.jobdir, EXITCODE)
            while not os.path.exists(exit_file):
                time.sleep(0.01)
        return real_look(rec, now)

    queue._look = look_after_terminate
    with pytest.raises(JobFailed, match="ended cancelled"):
        f.result(timeout=30)
    rec = ex.store.get(f.key)
    assert rec.state is JobState.CANCELLED, (rec.state, rec.reason)
