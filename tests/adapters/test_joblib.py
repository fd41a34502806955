"""The joblib backend on the local executor and on the live SLURM."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter

import adapter_tasks as tasks
import pytest
from adapter_helpers import wait_until
from joblib import Parallel, delayed, parallel_config

from hpcexec import JobFailed, JobState, PayloadError, RemoteTraceback, ResourceError
from hpcexec.adapters.joblib import DEFAULT_MAX_JOBS, HpcexecBackend, local_slots


def jobs_of(ex):
    return ex.store.select()


def test_results_come_back_in_order_from_few_jobs(anyex):
    with parallel_config(backend="hpcexec", executor=anyex, n_jobs=4):
        out = Parallel()(delayed(tasks.square_and_pid)(i) for i in range(200))
    assert [v for v, _ in out] == [i * i for i in range(200)]
    # Short tasks are packed: a probe job, then jobs of many tasks; not 200 jobs.
    per_job = Counter(pid for _, pid in out)  # each job is one process
    assert len(per_job) == len(jobs_of(anyex)) <= 6
    assert max(per_job.values()) >= 50
    # the jobs completed; worker jobs (on a scheduler) stay for the next call until idle
    alive = {JobState.RUNNING} if local_slots(anyex) is None else set()
    assert {r.state for r in jobs_of(anyex)} <= {JobState.COMPLETED} | alive


def test_order_is_kept_when_later_jobs_finish_first(anyex):
    delays = [0.8, 0.6, 0.4, 0.2, 0.0]
    with parallel_config(backend="hpcexec", executor=anyex, n_jobs=5, batch_seconds=0.01):
        out = Parallel(batch_size=1)(delayed(tasks.sleepy)(i, d) for i, d in enumerate(delays))
    assert out == [0, 1, 2, 3, 4]
    assert len(jobs_of(anyex)) >= 3  # really spread over jobs


def test_exception_keeps_its_type_and_remote_traceback(anyex):
    with parallel_config(backend="hpcexec", executor=anyex, n_jobs=2):
        with pytest.raises(tasks.TaskError, match="task 7 failed") as info:
            Parallel()(delayed(tasks.fail_on)(i, 7) for i in range(20))
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "fail_on" in info.value.__cause__.tb


def test_a_job_submitted_while_the_call_aborts_is_ended(ex):
    """Seen in CI (test_abort_cancels_the_other_jobs[local], Python 3.10): joblib aborted the
    call while the pool's thread was submitting a job; abort() ended the jobs it knew, and
    the one being submitted ran its 60 s."""
    import jobfns

    from hpcexec.adapters.joblib_pool import JobPool

    submitted = []

    class AbortedMeanwhile:  # what the pool submits to: the call aborts during the submission
        resources = ex.resources

        def options(self, **kw):
            return self

        def submit(self, fn, calls):
            pool.abort()
            submitted.append(ex.submit(jobfns.sleep_then, 60, "should not run out"))
            return submitted[-1]

    pool = JobPool(AbortedMeanwhile(), lambda calls: None, cache=False, patience=1.0)
    pool.start_call(slots=1, target=1.0)
    pool.add([("a call",)], lambda outcome: None)
    wait_until(lambda: submitted and submitted[0].done(), 30, "the job ended after the abort")
    assert submitted[0].record.state is JobState.CANCELLED
    pool.stop()


def test_abort_cancels_the_other_jobs(anyex):
    # Task 0 (the probe) and the others sleep; task 1 fails: Parallel must raise at once and
    # end every job still queued or running (locally the later ones wait for a core).
    start = time.monotonic()
    with parallel_config(backend="hpcexec", executor=anyex, n_jobs=6, batch_seconds=0.1):
        with pytest.raises(tasks.TaskError):
            Parallel(batch_size=1)(delayed(tasks.fail_on)(i, 1, 60) for i in range(6))
    assert time.monotonic() - start < 40
    wait_until(
        lambda: all(r.state.finished for r in jobs_of(anyex)), 60, "every job ended after the abort"
    )
    records = jobs_of(anyex)
    ended = sorted(r.state.value for r in records)
    if local_slots(anyex) is None:  # worker jobs: those running a task were ended, idle ones left
        assert ended.count("cancelled") >= 1, ended
        return
    assert len(records) >= 2
    assert ended.count("failed") + ended.count("completed") <= 1, ended
    assert all(
        r.state is JobState.CANCELLED
        for r in records
        if r.state not in (JobState.FAILED, JobState.COMPLETED)
    ), ended
    assert ended.count("cancelled") >= 1, ended


def test_generator_return(anyex):
    with parallel_config(backend="hpcexec", executor=anyex, n_jobs=3):
        gen = Parallel(return_as="generator")(delayed(tasks.square)(i) for i in range(30))
        assert not isinstance(gen, list)
        assert list(gen) == [i * i for i in range(30)]
        unordered = Parallel(return_as="generator_unordered")(
            delayed(tasks.square)(i) for i in range(30)
        )
        assert sorted(unordered) == sorted(i * i for i in range(30))


def test_nested_calls_run_inside_the_job(anyex):
    with parallel_config(backend="hpcexec", executor=anyex, n_jobs=2):
        out = Parallel()(delayed(tasks.nested_outer)(x) for x in range(4))
    assert [r for r, _ in out] == [[(x + i) ** 2 for i in range(3)] for x in range(4)]
    assert {name for _, name in out} == {"SequentialBackend"}  # one core per job: no threads
    # no job per inner call: the jobs that ran the outer ones only
    ran = "joblib-worker" if local_slots(anyex) is None else "joblib-nested_outer"
    assert {r.name for r in jobs_of(anyex)} == {ran}


def test_nested_calls_use_the_jobs_cores_as_threads(ex):
    with parallel_config(backend="hpcexec", executor=ex, n_jobs=2, threads=2):
        out = Parallel()(delayed(tasks.nested_outer)(x) for x in range(2))
    assert {name for _, name in out} == {"ThreadingBackend"}
    assert [r for r, _ in out] == [[0, 1, 4], [1, 4, 9]]


def whole_machine(ex, cache):
    """Jobs that hold every core of the local backend, whose own Executors (a nested
    ``Parallel(backend="hpcexec")`` makes one) use the same cache, as they do when the user
    sets ``HPCEXEC_CACHE_DIR``. A nested call that submitted jobs of its own would wait for a
    core forever: the tests' timeouts make that a failure, not a hang."""
    return ex.options(threads=local_slots(ex), env={"HPCEXEC_CACHE_DIR": str(cache)})


def test_an_hpcexec_parallel_inside_a_job_runs_in_the_job(ex, cache):
    f = whole_machine(ex, cache).submit(tasks.nested_hpcexec, 3)
    values, pids, job_pid = f.result(timeout=90)
    assert values == [9, 16, 25]
    assert pids == {job_pid}
    assert [r.name for r in jobs_of(ex)] == ["nested_hpcexec"]  # no jobs of its own


def test_parallel_config_hpcexec_inside_a_joblib_job_runs_in_the_job(ex, cache):
    with parallel_config(backend="hpcexec", executor=whole_machine(ex, cache), n_jobs=2):
        out = Parallel(batch_size=1, timeout=90)(
            delayed(tasks.nested_hpcexec)(x, True) for x in range(2)
        )
    assert [values for values, _, _ in out] == [[0, 1, 4], [1, 4, 9]]
    assert all(pids == {job_pid} for _, pids, job_pid in out)
    assert {r.name for r in jobs_of(ex)} == {"joblib-nested_hpcexec"}


def test_gridsearch_gives_the_default_backends_best_params(anyex):
    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    X, y = load_iris(return_X_y=True)
    grid = {"C": [0.01, 1.0, 100.0], "gamma": [0.001, 0.1]}
    reference = GridSearchCV(SVC(), grid, cv=3, n_jobs=2).fit(X, y)  # joblib's default: loky
    with parallel_config(backend="hpcexec", executor=anyex, n_jobs=4):
        ours = GridSearchCV(SVC(), grid, cv=3).fit(X, y)
    assert ours.best_params_ == reference.best_params_
    assert list(ours.cv_results_["mean_test_score"]) == list(
        reference.cv_results_["mean_test_score"]
    )
    assert len(jobs_of(anyex)) >= 1 and all(r.name.startswith("joblib-") for r in jobs_of(anyex))


def test_a_job_that_dies_fails_the_call(ex):
    with parallel_config(backend="hpcexec", executor=ex, n_jobs=2):
        with pytest.raises(JobFailed) as info:
            Parallel()(delayed(tasks.die)(3) for _ in range(3))
    assert info.value.state in (JobState.FAILED, JobState.LOST)


def test_an_argument_that_cannot_be_pickled_fails_the_call(ex):
    with parallel_config(backend="hpcexec", executor=ex, n_jobs=2), pytest.raises(PayloadError):
        Parallel()(delayed(tasks.square)(threading.Lock()) for _ in range(3))


def test_timeout_aborts_and_ends_the_job(ex):
    with parallel_config(backend="hpcexec", executor=ex, n_jobs=2):
        with pytest.raises(multiprocessing.TimeoutError):  # what joblib raises
            Parallel(timeout=1)(delayed(tasks.sleepy)(i, 60) for i in range(2))
    wait_until(lambda: all(r.state.finished for r in jobs_of(ex)), 30, "the jobs ended")
    assert {r.state for r in jobs_of(ex)} == {JobState.CANCELLED}


def test_jobs_are_sized_by_the_measured_task_time(ex):
    # 0.2 s tasks and a target of 1 s of work per job: about five tasks per job.
    with parallel_config(backend="hpcexec", executor=ex, n_jobs=2, batch_seconds=1.0):
        out = Parallel()(delayed(tasks.sleepy)(i, 0.2) for i in range(20))
    assert out == list(range(20))
    assert 3 <= len(jobs_of(ex)) <= 9


def test_n_jobs_minus_one_means_every_local_slot(ex):
    backend = HpcexecBackend(ex)
    slots = local_slots(ex)
    import os

    assert slots == len(os.sched_getaffinity(0)) or slots == os.cpu_count()
    assert backend.effective_n_jobs(-1) == slots
    assert backend.effective_n_jobs(-2) == max(slots - 1, 1)
    assert backend.effective_n_jobs(3) == 3
    assert HpcexecBackend(ex.options(threads=2)).effective_n_jobs(-1) == max(slots // 2, 1)
    with pytest.raises(ValueError):
        backend.effective_n_jobs(0)


@pytest.mark.slurm
def test_n_jobs_minus_one_on_a_scheduler_is_max_jobs(sex):
    assert local_slots(sex) is None
    assert HpcexecBackend(sex).effective_n_jobs(-1) == DEFAULT_MAX_JOBS
    assert HpcexecBackend(sex, max_jobs=10).effective_n_jobs(-2) == 9


def test_executor_keyword_arguments_make_an_executor(tmp_path):
    cache = tmp_path / "own"
    with parallel_config(backend="hpcexec", n_jobs=2, cache_dir=cache, poll_interval=0.02):
        out = Parallel()(delayed(tasks.env)("HPCEXEC_JOB_ID") for _ in range(3))
    assert all(out)
    import hpcexec

    assert hpcexec.Store(cache).select()


def test_bad_options_are_refused_with_what_to_do(ex, tmp_path):
    with pytest.raises(ResourceError, match="configure a new Executor"):
        HpcexecBackend(ex, cache_dir=tmp_path)
    with pytest.raises(ResourceError, match="tme"):
        HpcexecBackend(ex, tme="1:00:00")
    with pytest.raises(ResourceError, match="batch_seconds"):
        HpcexecBackend(ex, batch_seconds=0)


def test_inner_max_num_threads_reaches_the_jobs(ex):
    with parallel_config(backend="hpcexec", executor=ex, n_jobs=2, inner_max_num_threads=3):
        out = Parallel()(delayed(tasks.env)("OMP_NUM_THREADS") for _ in range(2))
    assert out == ["3", "3"]


def test_jobs_carry_several_times_their_start_up(ex):
    # Importing the tasks' module takes 1 s in every job: with 0.05 s tasks and a target of
    # 0.5 s per job, jobs would pay twice their work in start-up; they carry more instead.
    import slow_import_tasks

    with parallel_config(backend="hpcexec", executor=ex, n_jobs=2, batch_seconds=0.5):
        out = Parallel()(delayed(slow_import_tasks.sleepy)(i, 0.05) for i in range(40))
    assert out == list(range(40))
    assert len(jobs_of(ex)) <= 3  # the probe, then one or two jobs, not eight


def test_the_tail_of_a_call_is_spread_over_the_free_slots(ex):
    # The same 1 s start-up would have one job carry all that remains after the probe (two
    # seconds of work) while the second slot idles: the rest goes to both slots at once.
    import slow_import_tasks

    with parallel_config(backend="hpcexec", executor=ex, n_jobs=2, batch_seconds=0.5):
        out = Parallel()(delayed(slow_import_tasks.sleepy)(i, 0.05) for i in range(40))
    assert out == list(range(40))
    _probe, *rest = sorted(jobs_of(ex), key=lambda r: r.submitted)
    assert len(rest) == 2
    a, b = rest
    assert a.started < b.finished and b.started < a.finished, "the two ran side by side"


@pytest.mark.slurm
def test_on_a_scheduler_the_calls_share_worker_jobs(sex):
    with parallel_config(backend="hpcexec", executor=sex, n_jobs=2):
        first = Parallel()(delayed(tasks.square)(i) for i in range(60))
        after_first = sorted(r.key for r in jobs_of(sex))
        second = Parallel()(delayed(tasks.square)(i) for i in range(60))
    assert first == second == [i * i for i in range(60)]
    keys = sorted(r.key for r in jobs_of(sex))
    assert keys == after_first  # the second call started no job: it ran in the same workers
    assert all(k.startswith("worker-") for k in keys), keys
    with parallel_config(backend="hpcexec", executor=sex, n_jobs=2, workers=False):
        assert Parallel()(delayed(tasks.square)(i) for i in range(4)) == [0, 1, 4, 9]
    assert any(not r.key.startswith("worker-") for r in jobs_of(sex))
