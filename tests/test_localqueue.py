"""The local backend's core-aware queue (hpcexec.localqueue)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

import jobfns
import pytest

from hpcexec import BackendError, Executor, JobFailed, JobState, ResourceError
from hpcexec.layout import EXITCODE


def _intervals(path):
    return [tuple(map(float, line.split())) for line in path.read_text().splitlines()]


def _overlap(a, b):
    return a[0] < b[1] and b[0] < a[1]


def test_jobs_using_every_core_run_one_at_a_time(ex, tmp_path):
    cores = ex.session.backend.total_cores
    log = tmp_path / "intervals"
    fs = [
        ex.options(threads=cores).submit(jobfns.record_interval, str(log), 0.3 + i / 1000)
        for i in range(3)
    ]
    assert all(f.result(timeout=60) >= 0.3 for f in fs)
    spans = _intervals(log)
    assert len(spans) == 3
    for i, a in enumerate(spans):
        for b in spans[i + 1 :]:
            assert not _overlap(a, b), spans


def test_one_core_jobs_fill_every_core(ex, tmp_path):
    cores = ex.session.backend.total_cores
    if cores < 2:
        pytest.skip("needs a machine with at least 2 cores")
    log = tmp_path / "intervals"
    fs = [ex.submit(jobfns.record_interval, str(log), 1.0 + i / 1000) for i in range(cores)]
    [f.result(timeout=60) for f in fs]
    spans = _intervals(log)
    assert all(_overlap(spans[0], s) for s in spans[1:]), spans


def test_small_job_backfills_while_a_big_one_waits(ex, tmp_path):
    cores = ex.session.backend.total_cores
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
    cores = ex.session.backend.total_cores
    big = ex.options(threads=cores + 1)
    assert big.job_script(jobfns.double, 1).startswith("#!/bin/bash")  # a preview renders
    with pytest.raises(BackendError, match=f"has {cores}"):
        big.submit(jobfns.double, 1)
    with pytest.raises(BackendError, match=f"has {cores}"):
        big.map(jobfns.double, range(3))
    assert ex.store.select() == []  # nothing written
    with pytest.raises(BackendError, match="nodes"):
        ex.options(nodes=2)


def test_job_terminated_while_being_looked_at_ends_cancelled(ex, tmp_path):
    # The race of a joblib abort: a poll reads the running record, terminate() marks it and
    # kills it, and the poll then finds the exit code of the kill. Cancelled, not failed.
    queue = ex.session.queue
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


@pytest.mark.parametrize("warm", ["1", "0"], ids=["warm", "script"])
def test_relative_outputs_are_written_in_the_workdir_where_they_are_read(
    cache, tmp_path, monkeypatch, warm
):
    monkeypatch.setenv("HPCEXEC_FORKSERVER", warm)
    client_dir, work = tmp_path / "client", tmp_path / "W"
    client_dir.mkdir()
    work.mkdir()
    monkeypatch.chdir(client_dir)  # the client's directory is no job's workdir
    with Executor("local", cache_dir=cache, poll_interval=0.02) as ex:
        sh = ex.options(workdir=str(work), stdout="sh.out", stderr="sh.err").submit_shell(
            "echo shell says; echo shell warns >&2"
        )
        py = ex.options(workdir=str(work), stdout="py.out", stderr="py.err").submit(
            jobfns.print_both, "python says", "python warns"
        )
        result = sh.result(timeout=60)
        assert py.result(timeout=60) is True
    assert (result.stdout, result.stderr) == ("shell says\n", "shell warns\n")
    assert (work / "sh.out").read_text() == "shell says\n"
    assert (work / "sh.err").read_text() == "shell warns\n"
    assert (py.stdout(), py.stderr()) == ("python says\n", "python warns\n")
    assert (work / "py.out").read_text() == "python says\n"
    assert os.listdir(client_dir) == []


def _bad_start(case, work):
    """Options of a job that cannot start once ``work`` is changed by the returned
    function (after submission, as a workdir removed meanwhile), and the path to blame."""
    if case == "missing workdir":
        return {"workdir": str(work)}, lambda: work.rmdir(), str(work)
    if case == "workdir is a file":
        return {"workdir": str(work)}, lambda: (work.rmdir(), work.write_text("")), str(work)
    if case == "missing stdout dir":
        return {"workdir": str(work), "stdout": "no/out.txt"}, lambda: None, f"{work}/no/out.txt"
    (work / "sub").mkdir()
    return {"workdir": str(work), "stderr": "sub"}, lambda: None, f"{work}/sub"


@pytest.mark.parametrize("kind", ["shell", "python-script", "python-warm"])
@pytest.mark.parametrize(
    "case", ["missing workdir", "workdir is a file", "missing stdout dir", "stderr is a directory"]
)
def test_a_job_that_cannot_start_fails_alone_within_a_poll(
    cache, tmp_path, monkeypatch, kind, case
):
    monkeypatch.setenv("HPCEXEC_FORKSERVER", "1" if kind == "python-warm" else "0")
    work = tmp_path / "W"
    work.mkdir()
    opts, spoil, blame = _bad_start(case, work)
    ex = Executor("local", cache_dir=cache, poll_interval=0.02)
    held = ex.options(hold=True, **opts)
    bad = held.submit_shell("echo never") if kind == "shell" else held.submit(jobfns.double, 2)
    try:
        spoil()
        assert bad.release()
        with Executor("local", cache_dir=cache) as other:  # another client's one poll
            other.refresh()
            rec = ex.store.get(bad.key)
            assert rec.state is JobState.FAILED, (rec.state, rec.reason)
        assert rec.reason.startswith(f"cannot start: {blame}: "), rec.reason
        with pytest.raises(JobFailed, match="cannot start"):
            bad.result(timeout=30)
        assert ex.submit_shell("echo fine").result(timeout=60).stdout == "fine\n"
        assert ex.submit(jobfns.double, 21).result(timeout=60) == 42
    finally:
        bad.terminate()  # still pending where the queue could not fail it
        ex.shutdown()


def _slow_starts(ex, monkeypatch, seconds):
    """Make every warm start of ``ex`` take ``seconds`` longer; an event set once one began."""
    transport = ex.session.transport
    real, began = transport.spawn_warm, threading.Event()

    def slow(python, request):
        began.set()
        time.sleep(seconds)
        return real(python, request)

    monkeypatch.setattr(transport, "spawn_warm", slow)
    return began


def test_a_slow_start_keeps_no_submission_waiting(cache, monkeypatch):
    """Jobs are started outside the store's write transaction: a submission (a write) made
    while a process starts goes through at once, and both jobs run."""
    ex = Executor("local", cache_dir=cache, poll_interval=0.02)
    try:
        began = _slow_starts(ex, monkeypatch, 2.0)
        first = ex.submit(jobfns.double, 1)
        assert began.wait(30), "the job never began to start"
        t0 = time.monotonic()
        second = ex.submit(jobfns.double, 2)
        waited = time.monotonic() - t0
        assert waited < 1.0, f"the submission waited {waited:.2f} s for a start"
        assert (first.result(timeout=60), second.result(timeout=60)) == (2, 4)
    finally:
        ex.shutdown()


@pytest.mark.parametrize("control", ["cancel", "hold"])
def test_a_job_being_started_is_no_longer_queued_for_cancel_or_hold(cache, monkeypatch, control):
    """cancel() and hold() of a job the queue is starting wait for the start (the start lock),
    then find it started: it is neither cancelled nor held while it runs."""
    ex = Executor("local", cache_dir=cache, poll_interval=0.02)
    try:
        began = _slow_starts(ex, monkeypatch, 1.0)
        f = ex.submit(jobfns.double, 21)
        assert began.wait(30), "the job never began to start"
        assert getattr(f, control)() is False
        assert ex.store.get(f.key).state in (JobState.RUNNING, JobState.COMPLETED)
        assert f.result(timeout=60) == 42
    finally:
        ex.shutdown()


def test_the_fork_servers_child_that_cannot_start_records_why(cache, tmp_path):
    from hpcexec import forkserver
    from hpcexec.jobfiles import parse_exitcode

    jobdir = tmp_path / "job"
    jobdir.mkdir()
    out = str(tmp_path / "out")
    pid = forkserver.spawn(
        sys.executable,
        {
            "jobdir": str(jobdir),
            "cwd": str(tmp_path / "gone"),
            "stdout": out,
            "stderr": out,
            "env": {},
        },
    )
    deadline = time.monotonic() + 30
    while not (jobdir / EXITCODE).exists():
        assert time.monotonic() < deadline, f"no exit-code file from {pid}"
        time.sleep(0.02)
    code, reason = parse_exitcode((jobdir / EXITCODE).read_text())
    assert code == 1 and reason.startswith(f"cannot start: {tmp_path / 'gone'}: "), reason


def test_a_failing_poll_logs_one_line_per_attempt(ex, caplog):
    f = ex.options(hold=True).submit_shell("true")
    with ex.store.write() as tx:  # a record no poll can make sense of
        tx.update(f.key, state=JobState.RUNNING, job_id="not-a-pid")
    with caplog.at_level(logging.DEBUG, logger="hpcexec.monitor"):
        deadline = time.monotonic() + 30
        while len([r for r in caplog.records if r.levelno == logging.WARNING]) < 2:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
        with ex.store.write() as tx:
            tx.update(f.key, state=JobState.FAILED, finished=time.time(), reason="test")
        with pytest.raises(JobFailed):
            f.result(timeout=30)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in warnings)
    assert all(
        "polling jobs failed" in r.getMessage() and "not-a-pid" in r.getMessage() for r in warnings
    ), [r.getMessage() for r in warnings]
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)


def test_local_cores_caps_what_the_local_backend_uses(cache, tmp_path):
    """fyrd's users cap the local backend's cores: jobs then wait for the cap, not the
    machine."""
    log = tmp_path / "intervals"
    with Executor(cache_dir=cache, local_cores=1, poll_interval=0.02) as ex:
        assert ex.session.backend.total_cores == 1
        fs = [ex.submit(jobfns.record_interval, str(log), 0.3 + i / 1000) for i in range(2)]
        assert all(f.result(timeout=60) > 0 for f in fs)
        with pytest.raises(BackendError, match="has 1"):
            ex.options(threads=2).submit(jobfns.double, 1)
    first, second = _intervals(log)
    assert not _overlap(first, second)  # one at a time
    with pytest.raises(ResourceError, match="local_cores must be a positive whole number"):
        Executor(cache_dir=cache, local_cores=0)
