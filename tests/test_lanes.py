"""Lanes of the local backend (hpcexec.locallanes, hpcexec.lanerun): queued jobs alike run
one after another in the process of the first, each with its own record and files; the
cores are never over-committed; a job taken out of a lane (cancel, hold, its lane's process
gone) never runs there, and runs exactly once."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import jobfns
import pytest

from hpcexec import Executor, JobState
from hpcexec.lanerun import LANE, LANE_FILE
from hpcexec.layout import EXITCODE
from hpcexec.locallanes import LANE_MOST, first_of, laneable
from hpcexec.record import JobRecord


def _executor(cache, cores=1):
    """A local executor whose jobs so far were short (lanes form only then)."""
    ex = Executor(cache_dir=cache, local_cores=cores, poll_interval=0.02)
    assert [f.result(timeout=60) for f in [ex.submit(jobfns.double, -i) for i in (1, 2, 3)]]
    return ex


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _lane(ex, tmp_path, first_fn, first_args, rest_fn, rest_args):
    """On one core: a blocker holds it while ``first`` and the ``rest`` queue; when it ends,
    ``first`` starts with the rest in its lane. Returns (first, rest) once it has."""
    gate = tmp_path / "blocker-gate"
    blocker = ex.submit(jobfns.wait_for, str(gate), "blocker")
    _wait(lambda: blocker.running())
    first = ex.submit(first_fn, *first_args)
    rest = [ex.submit(rest_fn, *a) for a in rest_args]
    _wait(lambda: all(f.record.state is JobState.PENDING for f in [first, *rest]))
    gate.write_text("")
    _wait(lambda: first.running() and all(LANE in f.record.resources for f in rest))
    return first, rest


def test_queued_submits_run_in_the_first_ones_process_each_with_its_own_record(cache):
    """200 short submits paid for a process and a pass of the client each: 4-5x joblib's
    loky on two cores (benchmarks/local_overhead.py, row 2b)."""
    with _executor(cache) as ex:
        fs = [ex.submit(jobfns.where, i) for i in range(12)]
        got = [f.result(timeout=60) for f in fs]
        recs = [f.record for f in fs]
    assert [g["i"] for g in got] == list(range(12))
    by_pid = Counter(g["pid"] for g in got)
    assert max(by_pid.values()) >= 2, by_pid  # a lane ran several in one process
    for g, f, rec in zip(got, fs, recs, strict=True):
        assert g["job_id"] == rec.job_id == f.job_id
        assert int(rec.job_id.split(":")[0]) == g["pid"]
        assert rec.state is JobState.COMPLETED
        for name in ("started", "result.pkl", "usage", EXITCODE):
            assert (rec.path / name).exists(), (rec.key, name)
        assert f.stdout() == f"task {g['i']} on stdout\n"  # its own output file
    laned = [r for r in recs if LANE in r.resources]
    assert laned and all(first_of(r.resources[LANE]) in {x.key for x in recs} for r in laned)


def test_lanes_never_run_more_jobs_at_once_than_the_cores(cache, tmp_path):
    log = tmp_path / "intervals"
    with _executor(cache, cores=2) as ex:
        fs = [ex.submit(jobfns.record_interval, str(log), 0.01 + i / 10000) for i in range(40)]
        [f.result(timeout=60) for f in fs]
    points = []
    for line in log.read_text().splitlines():
        t0, t1 = map(float, line.split())
        points += [(t0, 1), (t1, -1)]
    running = most = 0
    for _, step in sorted(points):
        running += step
        most = max(most, running)
    assert most <= 2


def test_a_job_cancelled_while_it_waits_in_a_lane_never_runs(cache, tmp_path):
    gate = tmp_path / "gate"
    runs = tmp_path / "runs"
    with _executor(cache) as ex:
        args = [(str(runs), i) for i in range(5)]
        _, rest = _lane(ex, tmp_path, jobfns.wait_for, (str(gate), "x"), jobfns.count_run, args)
        assert rest[2].cancel()
        gate.write_text("")
        assert [f.result(timeout=60) for f in rest if f is not rest[2]] == [0, 10, 30, 40]
        assert rest[2].record.state is JobState.CANCELLED
    assert sorted(runs.read_text().split()) == ["0", "1", "3", "4"]


def test_a_job_held_in_a_lane_waits_and_runs_once_released(cache, tmp_path):
    gate = tmp_path / "gate"
    runs = tmp_path / "runs"
    with _executor(cache) as ex:
        args = [(str(runs), i) for i in range(3)]
        _, rest = _lane(ex, tmp_path, jobfns.wait_for, (str(gate), "x"), jobfns.count_run, args)
        assert ex.session.queue.hold(rest[0].record.key)
        gate.write_text("")
        assert [f.result(timeout=60) for f in rest[1:]] == [10, 20]
        assert rest[0].record.state is JobState.HELD
        assert ex.session.queue.release(rest[0].record.key)
        assert rest[0].result(timeout=60) == 0
    assert sorted(runs.read_text().split()) == ["0", "1", "2"]


@pytest.mark.parametrize("how, ends", [("terminate", "cancelled"), ("SIGKILL", "failed")])
def test_the_jobs_of_a_lane_whose_process_stopped_run_once_elsewhere(cache, tmp_path, how, ends):
    """Terminating a lane's running job stops its process (the lane with it); a process
    killed from outside leaves its lane's waiting jobs too. Either way they run elsewhere."""
    runs = tmp_path / "runs"
    with _executor(cache) as ex:
        args = [(str(runs), i) for i in range(3)]
        first, rest = _lane(ex, tmp_path, jobfns.sleep_then, (60, "x"), jobfns.count_run, args)
        pid = int(first.job_id.split(":")[0])
        if how == "terminate":
            assert ex.session.queue.terminate(first.record.key)
        else:
            os.kill(pid, signal.SIGKILL)
        assert [f.result(timeout=60) for f in rest] == [0, 10, 20]
        _wait(lambda: first.done())
        assert first.record.state.value == ends
        assert all(int(f.job_id.split(":")[0]) != pid for f in rest)
    assert sorted(runs.read_text().split()) == ["0", "1", "2"]


def test_reuse_slots_false_gives_each_job_its_own_process(cache):
    with _executor(cache) as ex:
        alone = ex.options(reuse_slots=False)
        got = [f.result(timeout=60) for f in [alone.submit(jobfns.where, i) for i in range(6)]]
    assert len({g["pid"] for g in got}) == 6


def test_a_lane_takes_at_most_its_share_of_the_queue(cache, tmp_path):
    """Cores freed after a lane formed must find jobs queued: a lane formed while one of two
    cores was free takes half of the jobs alike that are queued, the first half."""
    gates = [tmp_path / "a", tmp_path / "b"]
    with _executor(cache, cores=2) as ex:
        blockers = [ex.submit(jobfns.wait_for, str(g), str(g)) for g in gates]
        _wait(lambda: all(b.running() for b in blockers))
        first = ex.submit(jobfns.sleep_then, 0.5, "first")
        rest = [ex.submit(jobfns.double, i) for i in range(6)]
        _wait(lambda: all(f.record.state is JobState.PENDING for f in [first, *rest]))
        gates[1].write_text("")
        _wait(lambda: first.running())
        laned = [LANE in f.record.resources for f in rest]
        gates[0].write_text("")
        assert [f.result(timeout=60) for f in rest] == [0, 2, 4, 6, 8, 10]
    assert laned == [True, True, True, False, False, False]


def _rec(**resources):
    return JobRecord(
        key="k",
        backend="local",
        host="h",
        kind="call",
        jobdir="/j",
        resources={"python": "/usr/bin/python3", **resources},
    )


@pytest.mark.parametrize(
    "resources",
    [
        {"time": 60},
        {"deadline": "2030-01-01T00:00:00Z"},
        {"begin": "2030-01-01T00:00:00Z"},
        {"gpus": 1},
        {"retries": 2},
        {"mem": 100},
        {"stdin": "/dev/null"},
        {"reuse_slots": False},
        {"nodes": 2},
    ],
)
def test_jobs_with_limits_or_needs_of_their_own_never_join_a_lane(resources):
    assert laneable(_rec())
    assert not laneable(_rec(**resources))


def test_long_jobs_form_no_lanes(cache, tmp_path):
    """A lane of long jobs would hold its jobs back while cores that free up meanwhile find
    nothing queued; what a lane saves (milliseconds per job) matters for short jobs only."""
    with Executor(cache_dir=cache, local_cores=1, poll_interval=0.02) as ex:
        fs = [ex.submit(jobfns.sleep_then, 1.2, i) for i in range(3)]
        assert [f.result(timeout=60) for f in fs] == [0, 1, 2]
        pids = {f.job_id for f in fs}
    assert not [f for f in fs if LANE in f.record.resources] and len(pids) == 3


def test_a_lane_file_names_at_most_lane_most_jobs(cache):
    with _executor(cache) as ex:
        fs = [ex.submit(jobfns.double, i) for i in range(LANE_MOST + 20)]
        [f.result(timeout=60) for f in fs]
        sizes = [
            len(json.loads((f.record.path / LANE_FILE).read_text()))
            for f in fs
            if (f.record.path / LANE_FILE).exists()
        ]
    assert sizes and max(sizes) <= LANE_MOST


def test_a_lane_formed_by_a_client_that_died_before_starting_it_runs_once(cache, tmp_path):
    """The records of a lane are marked before its first job starts: a client that died in
    between left them marked, and no start took them (queue_head skips jobs in lanes)."""
    runs = tmp_path / "runs"
    ex = _executor(cache)
    try:
        held = ex.options(hold=True)
        fs = [held.submit(jobfns.count_run, str(runs), i) for i in range(3)]
        recs = [f.record for f in fs]
        with ex.session.store.write() as tx:  # as the dead client's first transaction left it
            for rec in recs:
                resources = {**rec.resources, LANE: recs[0].key}
                tx.update(rec.key, state=JobState.PENDING, resources=resources)
        assert [f.result(timeout=30) for f in fs] == [0, 10, 20]
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
    assert sorted(runs.read_text().split()) == ["0", "1", "2"]
