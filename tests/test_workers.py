"""Worker pools (hpcexec.workers, hpcexec.workerloop): long-lived jobs that run submitted
calls one after another, on the local backend, the live SLURM and over the loopback sshd."""

from __future__ import annotations

import os
import pickle
import time

import jobfns
import pytest

import hpcexec
from hpcexec import JobState, RemoteTraceback, ResourceError, WorkerLost
from hpcexec.workerloop import INBOX, serve


def wait_until(predicate, timeout, what):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"{what} not within {timeout} s")
        time.sleep(0.05)


def worker_records(ex):
    return [r for r in ex.store.select() if r.key.startswith("worker-")]


def test_tasks_run_in_few_workers_with_their_values_and_errors(ex):
    pool = ex.workers(1, idle=10)
    futures = [pool.submit(jobfns.add, i, b=1) for i in range(20)]
    failing = pool.submit(jobfns.raise_custom)
    assert [f.result(timeout=60) for f in futures] == list(range(1, 21))
    with pytest.raises(jobfns.CustomError) as info:
        failing.result(timeout=60)
    assert info.value.detail == "custom detail"
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert len(worker_records(ex)) == 1  # 21 tasks, one job
    pool.shutdown()


def test_a_worker_keeps_what_its_tasks_imported_and_set(ex):
    pool = ex.workers(1, idle=10)
    seen = [pool.submit(jobfns.calls_here).result(timeout=60) for _ in range(4)]
    assert {pid for pid, _ in seen} != {os.getpid()}
    assert len({pid for pid, _ in seen}) == 1
    assert [n for _, n in seen] == [1, 2, 3, 4]
    pool.shutdown()


def test_shutdown_ends_the_workers_and_removes_the_pools_files(ex):
    pool = ex.workers(2, idle=600)
    assert pool.submit(jobfns.double, 4).result(timeout=60) == 8
    pool.shutdown()
    assert [r.state for r in worker_records(ex)] == [JobState.COMPLETED]
    assert not os.path.exists(pool.dir)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(jobfns.double, 1)


def test_the_executors_shutdown_ends_its_pools_at_once(ex):
    pool = ex.workers(1, idle=600)
    assert pool.submit(jobfns.double, 4).result(timeout=60) == 8
    start = time.monotonic()
    ex.shutdown()
    assert time.monotonic() - start < 20
    assert not os.path.exists(pool.dir)


def test_an_idle_worker_leaves_and_a_new_one_takes_later_tasks(ex):
    pool = ex.workers(1, idle=0.5)
    assert pool.submit(jobfns.double, 1).result(timeout=60) == 2
    wait_until(
        lambda: all(r.state is JobState.COMPLETED for r in worker_records(ex)), 30, "idle exit"
    )
    assert pool.submit(jobfns.double, 2).result(timeout=60) == 4
    assert len(worker_records(ex)) == 2
    pool.shutdown()


def test_a_task_no_worker_took_can_be_cancelled(ex, tmp_path):
    pool = ex.workers(1, idle=10)
    busy = pool.submit(jobfns.sleep_then, 1.5, "slept")
    wait_until(busy.running, 60, "the first task running")
    marker = tmp_path / "ran"
    later = pool.submit(jobfns.count_run, str(marker), 1)
    assert later.cancel()
    assert later.cancelled()
    assert busy.result(timeout=60) == "slept"
    assert pool.submit(jobfns.double, 3).result(timeout=60) == 6
    assert not marker.exists()
    pool.shutdown()


def test_terminating_a_task_ends_its_worker_and_the_pool_goes_on(ex):
    pool = ex.workers(1, idle=10)
    stuck = pool.submit(jobfns.sleep_then, 120)
    wait_until(stuck.running, 60, "the task running")
    assert stuck.terminate()
    with pytest.raises(WorkerLost, match="was lost"):
        stuck.result(timeout=60)
    assert pool.submit(jobfns.double, 5).result(timeout=60) == 10
    assert len(worker_records(ex)) == 2
    pool.shutdown()


def test_a_task_that_kills_its_worker_fails_and_the_next_task_gets_a_new_worker(ex):
    pool = ex.workers(1, idle=10)
    assert pool.submit(jobfns.double, 1).result(timeout=60) == 2
    with pytest.raises(WorkerLost) as info:
        pool.submit(jobfns.hard_exit, 7).result(timeout=60)
    assert info.value.key == "000000002"
    assert "hpcexec show worker-" in str(info.value)
    assert pool.submit(jobfns.double, 2).result(timeout=60) == 4
    states = sorted(r.state.value for r in worker_records(ex))
    assert states == ["failed", "running"], states
    pool.shutdown()


def test_workers_that_cannot_start_fail_the_tasks_with_why(cache, tmp_path):
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'no python here' >&2\nexit 3\n")
    broken.chmod(0o755)
    ex = hpcexec.Executor("local", cache_dir=cache, python=str(broken))
    pool = ex.workers(2, idle=10)
    futures = [pool.submit(jobfns.double, i) for i in range(3)]
    for f in futures:
        with pytest.raises(hpcexec.JobFailed, match="no python here"):
            f.result(timeout=60)
    pool.shutdown(wait=False)
    ex.shutdown(wait=False)


class Planted:
    """Unpickled, it creates the file at ``path``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_planted_task_is_never_loaded(ex, tmp_path):
    pool = ex.workers(1, idle=10)
    marker = tmp_path / "planted ran"
    with open(os.path.join(pool.dir, INBOX, "000000000"), "wb") as f:
        f.write(pickle.dumps(Planted(str(marker))))  # not sealed with the cache's key
    assert pool.submit(jobfns.double, 6).result(timeout=60) == 12
    pool.shutdown()
    assert not marker.exists()


def test_bad_pool_settings_are_refused(ex):
    for n in (0, -1, 1.5, True):
        with pytest.raises(ResourceError, match="whole number"):
            ex.workers(n)
    with pytest.raises(ResourceError, match="seconds"):
        ex.workers(2, idle=0)


def test_a_worker_stops_taking_tasks_before_its_time_limit(tmp_path, monkeypatch):
    # In the job: with the end of its time near, a worker leaves without taking a task.
    for d in ("inbox", "claimed", "tasks", "done"):
        (tmp_path / d).mkdir()
    (tmp_path / "inbox" / "000000001").write_bytes(b"never loaded")
    key_dir = tmp_path / "secrets"
    key_dir.mkdir(mode=0o700)
    from hpcexec.integrity import key_id

    key = os.urandom(32)
    key_file = key_dir / key_id(key)
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 3))
    assert serve(str(tmp_path), "w1", str(key_file), idle=60, time_limit=None) == 0
    assert os.listdir(tmp_path / "inbox") == ["000000001"]


@pytest.mark.slurm
def test_a_pool_on_slurm_runs_many_tasks_in_one_job(sex):
    pool = sex.workers(2, idle=10)
    first = pool.submit(jobfns.double, 0)
    assert first.result(timeout=120) == 0
    futures = [pool.submit(jobfns.double, i) for i in range(30)]
    assert [f.result(timeout=120) for f in futures] == [2 * i for i in range(30)]
    assert sex.session.calls["sbatch"] <= 2
    pool.shutdown()
    assert {r.state for r in worker_records(sex)} == {JobState.COMPLETED}


@pytest.mark.slurm
def test_workers_started_together_go_in_few_submissions(sex):
    pool = sex.workers(4, idle=10)
    futures = []
    for i in range(8):  # as joblib's groups come: a few tens of milliseconds apart
        futures.append(pool.submit(jobfns.sleep_then, 1.0, i))
        time.sleep(0.05)
    assert [f.result(timeout=120) for f in futures] == list(range(8))
    assert len(worker_records(sex)) == 4
    assert sex.session.calls["sbatch"] <= 2  # the first at once, the others as one array
    pool.shutdown()


@pytest.mark.ssh
@pytest.mark.slurm
def test_a_pool_over_ssh_runs_tasks_on_the_login_nodes_scheduler(rex):
    pool = rex.workers(1, idle=10)
    assert [pool.submit(jobfns.add, i, b=2).result(timeout=120) for i in range(3)] == [2, 3, 4]
    with pytest.raises(ValueError, match="remote boom"):
        pool.submit(jobfns.fail, "remote boom").result(timeout=120)
    pool.shutdown()
    assert len(worker_records(rex)) == 1
