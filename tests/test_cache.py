"""Records as a cache: re-runs reuse results, explicit keys, force, retry, hold and after."""

from __future__ import annotations

import concurrent.futures
import time

import jobfns
import pytest

import hpcexec
from hpcexec import JobFailed, JobState, ResourceError


def test_rerun_returns_cached_results_without_submitting(cache, tmp_path):
    counter = tmp_path / "runs"
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.02) as ex:
        first = [ex.submit(jobfns.count_run, str(counter), i) for i in range(3)]
        shell = ex.submit_shell("echo cached-shell")
        assert [f.result() for f in first] == [0, 10, 20]
        assert shell.result().stdout == "cached-shell\n"
    records = {r.key: r for r in hpcexec.Store(cache).select()}
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.02) as ex:
        again = [ex.submit(jobfns.count_run, str(counter), i) for i in range(3)]
        assert all(f.done() for f in again)
        assert [f.result() for f in again] == [0, 10, 20]
        assert ex.submit_shell("echo cached-shell").result().stdout == "cached-shell\n"
    assert sorted(counter.read_text().split()) == ["0", "1", "2"]
    after = {r.key: r for r in hpcexec.Store(cache).select()}
    assert {k: r.submitted for k, r in after.items()} == {
        k: r.submitted for k, r in records.items()
    }


def test_a_rerun_reads_every_cached_result_together(cache, monkeypatch):
    """Over SSH each file read alone costs round trips: the results a re-run finds in the
    cache are read in one batch (Transport.read_files), not one file at a time."""
    from hpcexec.transport.local import LocalShell

    with hpcexec.Executor(cache_dir=cache, poll_interval=0.02) as ex:
        assert list(ex.map(jobfns.double, range(30), chunksize=1)) == [2 * i for i in range(30)]
    batches: list[list[str]] = []
    alone: list[str] = []
    inside: list[bool] = []
    read_files, read_bytes = LocalShell.read_files, LocalShell.read_bytes

    def reading_many(transport, paths):
        batches.append(list(paths))
        inside.append(True)
        try:
            return read_files(transport, paths)  # the local transport's reads each file
        finally:
            inside.pop()

    def reading_one(transport, path):
        if not inside:
            alone.append(path)
        return read_bytes(transport, path)

    monkeypatch.setattr(LocalShell, "read_files", reading_many)
    monkeypatch.setattr(LocalShell, "read_bytes", reading_one)
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.02) as ex:
        assert list(ex.map(jobfns.double, range(30), chunksize=1)) == [2 * i for i in range(30)]
    assert [p for p in alone if p.endswith("result.pkl")] == []  # none read alone
    assert [len([p for p in b if p.endswith("result.pkl")]) for b in batches] == [30]


def test_same_work_in_one_map_runs_once(ex, tmp_path):
    counter = tmp_path / "runs"
    out = list(ex.map(jobfns.count_run, [str(counter)] * 4, [5, 5, 6, 5], chunksize=1))
    assert out == [50, 50, 60, 50]
    assert sorted(counter.read_text().split()) == ["5", "6"]


def test_key_depends_on_what_is_computed_not_on_name_or_scheduling(ex):
    a = ex.submit(jobfns.double, 1)
    b = ex.options(name="other-name").submit(jobfns.double, 1)
    c = ex.options(time="10:00", mem="2G", queue="long").submit(jobfns.double, 1)
    d = ex.options(env={"X": "1"}).submit(jobfns.double, 1)
    assert a.key == b.key == c.key != d.key
    assert a.result(timeout=30) == b.result(timeout=30) == c.result(timeout=30) == 2


def test_a_shell_body_filling_in_a_scheduling_resource_has_it_in_its_key(ex):
    uses = "echo {time}"
    five, ten = ex.options(time="5:00"), ex.options(time="10:00")
    assert five.submit_shell(uses).key != ten.submit_shell(uses).key
    plain = "echo time"
    assert ex.submit_shell(plain).key == ex.options(time="10:00").submit_shell(plain).key


def test_a_rerun_with_more_time_reruns_only_what_failed(ex, tmp_path):
    """The fix-and-re-run of a map whose slow calls hit the walltime: finished results are
    reused, only the timed-out calls run again, with the new resources."""
    counter = tmp_path / "runs"
    first = ex.options(time="0:00:02")
    args = [(i, 5.0 if i in (1, 3) else 0.0) for i in range(5)]
    fs = [first.submit(jobfns.count_run, counter, i, s) for i, s in args]
    concurrent.futures.wait(fs, timeout=60)
    assert [f.record.state.value for f in fs] == [
        "completed",
        "timeout",
        "completed",
        "timeout",
        "completed",
    ]
    again = ex.options(time="0:01:00")
    fs2 = [again.submit(jobfns.count_run, counter, i, s) for i, s in args]
    assert [f.key for f in fs2] == [f.key for f in fs]
    assert [f.result(timeout=60) for f in fs2] == [0, 10, 20, 30, 40]
    assert sorted(counter.read_text().split()) == ["0", "1", "1", "2", "3", "3", "4"]
    assert {f.record.resources.get("time") for f in fs2[1::2]} == {60}


def test_explicit_key_names_the_record(ex):
    f = ex.options(key="sim-3").submit(jobfns.double, 3)
    assert f.key == "sim-3" and f.result(timeout=30) == 6
    # the same key returns the cached result even for other arguments
    g = ex.options(key="sim-3").submit(jobfns.double, 100)
    assert g.result(timeout=30) == 6
    with pytest.raises(ResourceError, match="'key'"):
        ex.options(key="bad key with spaces")
    with pytest.raises(ResourceError, match="drop key"):
        ex.options(key="k").map(jobfns.double, [1])


def test_force_runs_again(ex, tmp_path):
    counter = tmp_path / "runs"
    assert ex.submit(jobfns.count_run, str(counter), 1).result(timeout=30) == 10
    assert ex.options(force=True).submit(jobfns.count_run, str(counter), 1).result(timeout=30) == 10
    assert counter.read_text().split() == ["1", "1"]


def test_cached_failure_is_retried_by_default_and_kept_with_retry_false(ex, tmp_path):
    flag = tmp_path / "flag"
    body = f"test -e {flag}"
    with pytest.raises(JobFailed):
        ex.submit_shell(body).result(timeout=30)
    flag.touch()
    with pytest.raises(JobFailed):
        ex.options(retry=False).submit_shell(body).result(timeout=30)
    assert ex.submit_shell(body).result(timeout=30).returncode == 0


def test_missing_result_file_is_run_again(ex, tmp_path):
    counter = tmp_path / "runs"
    f = ex.submit(jobfns.count_run, str(counter), 2)
    assert f.result(timeout=30) == 20
    (f.record.path / "result.pkl").unlink()
    assert ex.submit(jobfns.count_run, str(counter), 2).result(timeout=30) == 20
    assert counter.read_text().split() == ["2", "2"]


def test_running_job_is_reattached_not_resubmitted(cache, tmp_path):
    counter = tmp_path / "runs"
    ex1 = hpcexec.Executor(cache_dir=cache, poll_interval=0.02)
    f1 = ex1.submit(jobfns.count_run, str(counter), 9, 1.0)
    deadline = time.monotonic() + 10
    while not f1.running() and time.monotonic() < deadline:
        time.sleep(0.02)
    ex1.shutdown(wait=False)
    ex2 = hpcexec.Executor(cache_dir=cache, poll_interval=0.02)
    f2 = ex2.submit(jobfns.count_run, str(counter), 9, 1.0)
    assert f2.key == f1.key and f2.job_id == f1.job_id
    assert f2.result(timeout=30) == 90
    ex2.shutdown()
    assert counter.read_text().split() == ["9"]


def test_hold_waits_until_release(ex, tmp_path):
    counter = tmp_path / "runs"
    f = ex.options(hold=True).submit(jobfns.count_run, str(counter), 4)
    time.sleep(0.4)
    assert f.state is JobState.HELD and not counter.exists()
    assert f.release() is True
    assert f.result(timeout=30) == 40


def test_after_orders_jobs_and_failed_dependency_fails_dependents(ex, tmp_path):
    log = tmp_path / "order"
    first = ex.submit_shell(f"sleep 0.5; echo first >> {log}")
    second = ex.options(after=[first]).submit_shell(f"echo second >> {log}")
    assert second.result(timeout=30).returncode == 0
    assert log.read_text() == "first\nsecond\n"
    bad = ex.submit(jobfns.fail)
    dependent = ex.options(after=bad).submit(jobfns.double, 1)
    with pytest.raises(JobFailed) as info:
        dependent.result(timeout=30)
    assert info.value.state is JobState.CANCELLED
    assert bad.key in info.value.reason and "never ran" in info.value.reason
    with pytest.raises(ResourceError, match="after"):
        ex.options(after=["not a future"])


def test_future_as_argument_is_a_dependency_and_passes_its_value(ex):
    a = ex.submit(jobfns.sleep_then, 0.5, 20)
    b = ex.submit(jobfns.add, a, b=1)
    c = ex.submit(jobfns.add, 0, b=[a, {"x": (b,)}].__len__())  # plain values still work
    nested = ex.submit(jobfns.env)  # no dependency
    d = ex.submit(lambda pair: pair[0] + pair[1]["x"][0], [a, {"x": (b,)}])
    assert b.result(timeout=30) == 21
    assert d.result(timeout=30) == 41
    assert c.result(timeout=30) == 2 and nested.result(timeout=30) == {}
    assert b.record.deps == [a.key] and sorted(d.record.deps) == sorted([a.key, b.key])
    assert list(ex.map(jobfns.add, [a, b], [1, 2])) == [21, 23]


def test_failed_future_argument_fails_the_dependent(ex):
    bad = ex.submit(jobfns.fail, "no value")
    dependent = ex.submit(jobfns.add, bad, 1)
    with pytest.raises(JobFailed) as info:
        dependent.result(timeout=30)
    assert info.value.state is JobState.CANCELLED and bad.key in info.value.reason


@pytest.mark.slurm
def test_a_rerun_on_slurm_with_more_mem_submits_only_what_failed(sex):
    need = [600 if i % 10 == 3 else 100 for i in range(200)]
    small = sex.options(mem="200M")
    fs = [small.submit(jobfns.needs_mem, i, mib) for i, mib in enumerate(need)]
    concurrent.futures.wait(fs, timeout=300)
    failed = [i for i, f in enumerate(fs) if f.exception(timeout=0)]
    assert failed == list(range(3, 200, 10))
    first_ids = [f.job_id for f in fs]
    sbatch_before = sex.session.calls.get("sbatch", 0)
    big = sex.options(mem="1G")
    fs2 = [big.submit(jobfns.needs_mem, i, mib) for i, mib in enumerate(need)]
    assert [f.result(timeout=300) for f in fs2] == list(range(200))
    assert [i for i, f in enumerate(fs2) if f.job_id != first_ids[i]] == failed
    assert sex.session.calls["sbatch"] - sbatch_before == 1  # the 20 failed as one array
    assert {fs2[i].record.resources["mem"] for i in failed} == {1024}
