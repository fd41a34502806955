"""The concurrent.futures semantics of Executor and JobFuture, on the local backend."""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import jobfns
import pytest

import hpcexec
from hpcexec import JobFailed, JobState, PayloadError, ResourceError, ShellResult
from hpcexec.layout import PAYLOAD


def test_submit_returns_a_real_future_with_the_result(ex):
    f = ex.submit(jobfns.add, 2, b=3)
    assert isinstance(f, cf.Future)
    assert isinstance(f, hpcexec.JobFuture)
    assert f.result(timeout=30) == 5
    assert f.state is JobState.COMPLETED
    assert f.done() and not f.running() and not f.cancelled()


def test_lambdas_and_closures_travel_by_value(ex):
    offset = 40
    assert ex.submit(lambda y: y + offset, 2).result(timeout=30) == 42

    def outer(n):
        return [offset + i for i in range(n)]

    assert ex.submit(outer, 3).result(timeout=30) == [40, 41, 42]


def test_unpicklable_argument_fails_at_submit_and_writes_nothing(ex):
    lock = threading.Lock()
    with pytest.raises(PayloadError, match=r"positional argument 0 .*lock"):
        ex.submit(jobfns.add, lock, 1)
    with pytest.raises(PayloadError, match="keyword argument 'b'"):
        ex.submit(jobfns.add, 1, b=lock)
    assert ex.store.select() == []
    assert not (ex.cache_dir / "jobs").exists() or not any((ex.cache_dir / "jobs").iterdir())


def test_not_callable_is_refused(ex):
    with pytest.raises(PayloadError, match="not callable"):
        ex.submit(42)


def test_remote_exception_keeps_its_type_and_traceback(ex):
    f = ex.submit(jobfns.raise_custom)
    with pytest.raises(jobfns.CustomError) as info:
        f.result(timeout=30)
    assert info.value.code == 7 and info.value.detail == "custom detail"
    cause = info.value.__cause__
    assert isinstance(cause, hpcexec.RemoteTraceback)
    assert "raise_custom" in cause.tb and "CustomError" in cause.tb
    assert isinstance(f.exception(), jobfns.CustomError)


def test_an_exception_that_cannot_be_rebuilt_arrives_as_a_stand_in(ex):
    def fail():
        class Picky(Exception):
            def __init__(self, a, *, b):
                super().__init__(f"{a} then {b}")

        raise Picky(1, b=2)

    err = ex.submit(fail).exception(timeout=30)
    assert isinstance(err, hpcexec.RemoteError) and isinstance(err, RuntimeError)
    assert err.type_name.endswith("fail.<locals>.Picky") and err.message == "1 then 2"
    assert isinstance(err.__cause__, hpcexec.RemoteTraceback)
    assert "raise Picky(1, b=2)" in err.__cause__.tb


SCRIPT = """\
import sys

import hpcexec


def explode(x):
    def inner(y):
        raise ValueError(f"exploded at {y}")
    return inner(x + 1)


if __name__ == "__main__":
    with hpcexec.Executor("local", cache_dir=sys.argv[1], poll_interval=0.05) as ex:
        err = ex.submit(explode, 1).exception(timeout=120)
    print(err.__cause__.tb)
"""


def test_traceback_of_a_function_of_the_main_script_shows_its_lines(tmp_path):
    script = tmp_path / "workflow.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "cache")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f'File "{script}", line 9, in explode\n    return inner(x + 1)\n' in proc.stdout
    assert (
        f'File "{script}", line 8, in inner\n    raise ValueError(f"exploded at {{y}}")\n'
        in proc.stdout
    )
    assert "ValueError: exploded at 2" in proc.stdout


def test_submit_shell_gives_output_and_exit_code(ex):
    r = ex.submit_shell("echo out-$((2+3)); echo err >&2").result(timeout=30)
    assert r == ShellResult(0, "out-5\n", "err\n")
    f = ex.submit_shell("echo partial; exit 3", check=False)
    assert f.result(timeout=30).returncode == 3
    g = ex.submit_shell("echo bad >&2; exit 4")
    with pytest.raises(JobFailed) as info:
        g.result(timeout=30)
    assert info.value.exit_code == 4
    assert info.value.state is JobState.FAILED
    assert "bad" in str(info.value)


def test_shell_job_sees_core_variables_and_placeholders(ex):
    f = ex.options(name="vars", threads=2, env={"GREETING": "hi there"}).submit_shell(
        'echo "$HPCEXEC_JOB_ID|$HPCEXEC_JOB_NAME|$HPCEXEC_WORKDIR|$HPCEXEC_SUBMIT_HOST|'
        '$HPCEXEC_NODELIST|$GREETING|{threads}|{cores}"'
    )
    out = f.result(timeout=30).stdout.strip().split("|")
    assert out[0] == f.job_id
    assert out[1] == "vars"
    assert out[2] == os.getcwd()
    assert out[3] and out[4]
    assert out[5:] == ["hi there", "2", "2"]


def test_the_users_own_placeholders_come_from_vars(ex, tmp_path):
    """clusterjob's user values: {infile} in a body, an aux script and an epilogue, filled
    (shell-quoted) from vars=; the values a text uses are in its cache key."""
    mark = tmp_path / "epilogue ran"
    view = ex.options(
        vars={"infile": "a b.txt", "n": 3, "unused": "x", "label": None},
        aux_scripts={"show.sh": "echo aux {infile}"},
        epilogue=f"echo {{n}} > '{mark}'",
    )
    f = view.submit_shell("echo {infile} {n} {other2} $(bash {jobdir}/show.sh)")
    assert f.result(timeout=30).stdout == "a b.txt 3 {other2} aux a b.txt\n"
    deadline = time.monotonic() + 30
    while not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mark.read_text() == "3\n"
    again = view.options(vars={"infile": "a b.txt", "n": 3, "unused": "y"}).submit_shell(
        "echo {infile} {n} {other2} $(bash {jobdir}/show.sh)"
    )
    assert again.key == f.key  # a value the text does not use is not in the key
    other = view.options(vars={"infile": "c.txt", "n": 3}).submit_shell(
        "echo {infile} {n} {other2} $(bash {jobdir}/show.sh)"
    )
    assert other.key != f.key and other.result(timeout=30).stdout.startswith("c.txt 3")
    with pytest.raises(ResourceError, match=r"uses \{label\} .* vars=\{'label': \.\.\.\}"):
        view.submit_shell("echo {label}")  # declared with no value: refused at once
    with pytest.raises(ResourceError, match="is hpcexec's own placeholder"):
        ex.options(vars={"mem": "4G"})
    with pytest.raises(ResourceError, match="lowercase letters"):
        ex.options(vars={"In-File": "x"})
    with pytest.raises(ResourceError, match="a string or a number"):
        ex.options(vars={"infile": ["x"]})


def test_callable_job_sees_core_variables(ex):
    f = ex.options(name="envcheck").submit(jobfns.env, "HPCEXEC_JOB_ID", "HPCEXEC_JOB_NAME")
    got = f.result(timeout=30)
    assert got == {"HPCEXEC_JOB_ID": f.job_id, "HPCEXEC_JOB_NAME": "envcheck"}


def test_map_keeps_order_and_stops_at_shortest(ex):
    assert list(ex.map(jobfns.add, range(10), range(100, 105))) == [100, 102, 104, 106, 108]
    assert list(ex.map(jobfns.double, [])) == []


def test_map_chunksize_batches_calls_per_job(ex):
    out = list(ex.map(jobfns.double, range(10), chunksize=4))
    assert out == [x * 2 for x in range(10)]
    kinds = sorted(r.kind for r in ex.store.select())
    assert kinds == ["chunk"] * 3
    with pytest.raises(ValueError, match="chunksize"):
        ex.map(jobfns.double, range(3), chunksize=0)


def test_map_raises_element_exception_in_position(ex):
    it = ex.map(jobfns.fail, ["a", "b"], chunksize=2)
    with pytest.raises(ValueError, match="a"):
        next(it)


def test_map_timeout_raises_timeout_error(ex):
    it = ex.map(jobfns.sleep_then, [5], timeout=0.3)
    t = time.monotonic()
    with pytest.raises(cf.TimeoutError):
        next(it)
    assert time.monotonic() - t < 3


def test_wait_all_first_completed_first_exception(ex):
    slow = ex.submit(jobfns.sleep_then, 2, "slow")
    fast = ex.submit(jobfns.add, 1, 1)
    done, not_done = cf.wait([slow, fast], timeout=30, return_when=cf.FIRST_COMPLETED)
    assert fast in done and slow in not_done
    bad = ex.submit(jobfns.fail)
    done, not_done = cf.wait([slow, bad], timeout=30, return_when=cf.FIRST_EXCEPTION)
    assert bad in done and slow in not_done
    done, not_done = cf.wait([slow, fast, bad], timeout=30)
    assert done == {slow, fast, bad} and not not_done


def test_as_completed_yields_each_once(ex):
    fs = [ex.submit(jobfns.sleep_then, s, s) for s in (0.6, 0.0)]
    order = [f.result() for f in cf.as_completed(fs, timeout=30)]
    assert order == [0.0, 0.6]


def test_done_callback_called_once_also_when_already_done(ex):
    calls = []
    f = ex.submit(jobfns.double, 21)
    f.add_done_callback(lambda fut: calls.append(fut.result()))
    f.result(timeout=30)
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    f.add_done_callback(lambda fut: calls.append("late"))
    assert calls == [42, "late"]


def test_cancel_pending_job_never_runs(ex, tmp_path):
    counter = tmp_path / "runs"
    held = ex.options(hold=True).submit(jobfns.count_run, str(counter), 1)
    assert held.cancel() is True
    assert held.cancelled()
    with pytest.raises(cf.CancelledError):
        held.result(timeout=1)
    assert held.state is JobState.CANCELLED
    assert held.release() is False
    time.sleep(0.3)
    assert not counter.exists()


def test_a_job_whose_payload_is_gone_fails_saying_why(ex):
    f = ex.options(hold=True).submit(jobfns.double, 21)
    payload = Path(f.record.jobdir) / PAYLOAD
    payload.unlink()
    assert f.release() is True
    with pytest.raises(JobFailed) as info:
        f.result(timeout=60)
    why = f"cannot load the payload {payload}: FileNotFoundError"
    assert info.value.reason.startswith(why) and why in str(info.value)
    assert f"hpcexec: {why}" in info.value.stderr_tail


def test_cancel_running_job_returns_false_and_terminate_ends_it(ex):
    f = ex.submit(jobfns.sleep_then, 30)
    deadline = time.monotonic() + 10
    while not f.running() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert f.running()
    assert f.cancel() is False
    assert f.terminate() is True
    with pytest.raises(JobFailed) as info:
        f.result(timeout=15)
    assert info.value.state is JobState.CANCELLED
    assert "terminated" in info.value.reason


def test_killed_job_raises_job_failed_with_signal(ex):
    f = ex.submit(jobfns.sleep_then, 30)
    deadline = time.monotonic() + 10
    while not f.running() and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = int(f.job_id.split(":")[0])
    os.kill(pid, 9)
    with pytest.raises(JobFailed) as info:
        f.result(timeout=15)
    assert info.value.signal == 9
    assert info.value.state in (JobState.FAILED, JobState.LOST)
    assert "SIGKILL" in str(info.value)


def test_walltime_is_enforced_as_timeout(ex):
    f = ex.options(time="0:01").submit_shell("echo started; sleep 30")
    with pytest.raises(JobFailed) as info:
        f.result(timeout=20)
    assert info.value.state is JobState.TIMEOUT
    assert "walltime" in info.value.reason


def test_job_future_exposes_record_and_output(ex):
    f = ex.options(name="talky").submit_shell("echo to-out; echo to-err >&2")
    f.result(timeout=30)
    rec = f.record
    assert rec.key == f.key and rec.name == "talky" and rec.backend == "local"
    assert rec.state is JobState.COMPLETED and rec.exit_code == 0
    assert rec.submitted <= rec.started <= rec.finished
    assert f.stdout() == "to-out\n" and f.stderr() == "to-err\n"


def test_options_view_shares_store_and_validates(ex):
    view = ex.options(threads=1, mem="1GB", time="2:00:00", name="big")
    assert view.store is ex.store
    assert view.resources.mem == 1024 and view.resources.time == 7200
    f = view.submit(jobfns.double, 4)
    assert f.result(timeout=30) == 8
    assert f.record.name == "big"
    with pytest.raises(ResourceError, match="'mem'"):
        ex.options(mem="lots")
    with pytest.raises(ResourceError, match="Valid ones"):
        ex.options(memory="4GB")
    assert ex.store.select() == [f.record]


def test_submit_after_shutdown_raises_runtime_error(cache):
    ex = hpcexec.Executor(cache_dir=cache, poll_interval=0.02)
    ex.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit(jobfns.double, 1)
    with pytest.raises(RuntimeError):
        ex.submit_shell("true")


def test_context_manager_waits_for_futures(cache):
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.02) as ex:
        f = ex.submit(jobfns.sleep_then, 0.5, "ok")
    assert f.done() and f.result() == "ok"


def test_shutdown_cancel_futures_cancels_queued_jobs_in_the_queue(cache, tmp_path):
    ex = hpcexec.Executor(cache_dir=cache, poll_interval=0.02)
    counter = tmp_path / "runs"
    cores = ex.session.backend.total_cores
    blockers = [ex.submit(jobfns.sleep_then, 1.5, i) for i in range(cores)]
    queued = ex.submit(jobfns.count_run, str(counter), 1)
    time.sleep(0.3)
    ex.shutdown(wait=True, cancel_futures=True)
    assert queued.cancelled()
    assert all(b.result() == i for i, b in enumerate(blockers))
    assert ex.store.get(queued.key).state is JobState.CANCELLED
    assert not counter.exists()


def test_shutdown_never_kills_running_jobs(cache, tmp_path):
    marker = tmp_path / "finished"
    ex = hpcexec.Executor(cache_dir=cache, poll_interval=0.02)
    f = ex.submit_shell(f"sleep 1; echo done > {marker}")
    deadline = time.monotonic() + 10
    while not f.running() and time.monotonic() < deadline:
        time.sleep(0.02)
    ex.shutdown(wait=False)
    deadline = time.monotonic() + 15
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == "done\n"


def test_progress_bar_counts_states(ex, capfd):
    fs = [ex.submit(jobfns.double, i) for i in range(3)]
    done, _ = hpcexec.wait(fs, timeout=30, progress=True)
    assert done == set(fs)
    err = capfd.readouterr().err
    assert "3/3" in err and "done=3" in err
    out = list(ex.map(jobfns.double, range(4), progress=True))
    assert out == [0, 2, 4, 6]
    assert "4/4" in capfd.readouterr().err


def test_failed_status_poll_is_retried_not_a_failed_job(ex, monkeypatch):
    real_poll = ex.session.queue.poll
    failures = []

    def flaky():
        if len(failures) < 3:
            failures.append(1)
            raise OSError("status command failed")
        return real_poll()

    monkeypatch.setattr(ex.session.queue, "poll", flaky)
    assert ex.submit(jobfns.double, 5).result(timeout=30) == 10
    assert len(failures) == 3


def test_info_reports_exit_signal_wallclock_and_memory(ex):
    f = ex.submit(jobfns.sleep_then, 0.3, "x")
    f.result(timeout=30)
    info = f.info()
    assert info.state is JobState.COMPLETED and info.exit_code == 0 and not info.was_aborted
    assert info.job_id == f.job_id and info.nodelist == ex.session.host
    assert 0.3 <= info.wallclock < 10 and info.max_rss_mb > 1 and info.cpu_seconds >= 0
    g = ex.submit(jobfns.sleep_then, 30)
    deadline = time.monotonic() + 10
    while not g.running() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(int(g.job_id.split(":")[0]), 9)
    with pytest.raises(JobFailed):
        g.result(timeout=30)
    killed = g.info()
    assert killed.was_aborted and killed.signal == 9


def test_suspend_and_resume_a_running_job(ex, tmp_path):
    ticks = tmp_path / "ticks"
    f = ex.submit_shell(f"for i in $(seq 30); do echo $i >> {ticks}; sleep 0.1; done")
    deadline = time.monotonic() + 10
    while not ticks.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert f.suspend() is True and f.state is JobState.SUSPENDED
    time.sleep(0.3)
    frozen = len(ticks.read_text().split())
    time.sleep(0.6)
    assert len(ticks.read_text().split()) == frozen, "a suspended job must not advance"
    assert f.resume() is True
    assert f.result(timeout=30).returncode == 0
    assert len(ticks.read_text().split()) == 30
    assert f.suspend() is False  # finished: nothing to suspend


def test_the_same_shell_job_after_other_jobs_is_not_taken_from_the_cache(ex, tmp_path):
    a = ex.submit_shell("echo a")
    b = ex.submit_shell("echo b")
    first = ex.options(after=[a]).submit_shell("echo dependent")
    second = ex.options(after=[b]).submit_shell("echo dependent")
    assert first.key != second.key
    assert first.result(timeout=60).stdout == second.result(timeout=60).stdout == "dependent\n"


def test_cache_dir_with_a_tilde_is_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with hpcexec.Executor(cache_dir="~/hx-cache") as e:
        assert e.cache_dir == tmp_path / "hx-cache"
    assert not (tmp_path / "~").exists()


# -- one job, several futures: a job is cancelled only when no live future still wants it --


@pytest.fixture
def gate(ex, tmp_path):
    """Every core of the local backend held by one job until the test opens the gate (touches
    the returned path), so jobs submitted meanwhile stay queued."""
    path = tmp_path / "gate"
    cores = len(os.sched_getaffinity(0))
    blocker = ex.options(threads=cores, name="blocker").submit(jobfns.wait_for, str(path), "open")
    deadline = time.monotonic() + 30
    while not blocker.running() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert blocker.running()
    yield path
    path.touch()
    assert blocker.result(timeout=60) == "open"


def test_cancelling_one_of_two_identical_calls_leaves_the_other(ex, gate):
    a = ex.submit(pow, 2, 10)
    b = ex.submit(pow, 2, 10)
    assert a.key == b.key  # identical calls share one job
    assert a.cancel() is True
    assert a.cancelled() and not b.cancelled()
    assert b.state is JobState.PENDING  # the job still waits, for b
    gate.touch()
    assert b.result(timeout=60) == 1024
    assert not b.cancelled()
    with pytest.raises(cf.CancelledError):
        a.result(timeout=0)


def test_the_others_sharing_a_job_still_get_its_result(ex, gate, tmp_path):
    counter = tmp_path / "runs"
    fs = [ex.submit(jobfns.count_run, str(counter), 4) for _ in range(3)]
    assert fs[0].cancel() is True
    assert fs[1].cancel() is True
    gate.touch()
    assert fs[2].result(timeout=60) == 40
    assert [f.cancelled() for f in fs] == [True, True, False]
    assert counter.read_text() == "4\n"  # one job ran, once


def test_the_job_is_cancelled_when_every_future_sharing_it_is(ex, gate, tmp_path):
    counter = tmp_path / "runs"
    fs = [ex.submit(jobfns.count_run, str(counter), 5) for _ in range(3)]
    for f in fs[:2]:
        assert f.cancel() is True
        assert ex.store.get(f.key).state is JobState.PENDING
    assert fs[2].cancel() is True
    assert all(f.cancelled() for f in fs)
    assert ex.store.get(fs[0].key).state is JobState.CANCELLED
    gate.touch()
    time.sleep(0.5)
    assert not counter.exists()


def test_a_future_of_another_executor_keeps_a_shared_job(ex, gate, cache):
    a = ex.submit(pow, 2, 10)
    assert ex.store.get(a.key)  # written (submits gather): the other executor sees it
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.02, profile="") as other:
        b = other.submit(pow, 2, 10)
        c = other.attach(a.key)
        ex.shutdown(wait=False, cancel_futures=True)
        assert a.cancelled()
        assert ex.store.get(a.key).state is JobState.PENDING
        gate.touch()
        assert b.result(timeout=60) == 1024 and c.result(timeout=60) == 1024


def test_map_chunks_shared_with_another_executor_run_for_it(ex, gate, cache):
    mine = ex.map(jobfns.double, range(4), chunksize=2, timeout=0.5)
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.02, profile="") as other:
        theirs = other.map(jobfns.double, range(4), chunksize=2)
        with pytest.raises(cf.TimeoutError):
            next(mine)  # the map gives up: its futures not yet done are cancelled
        gate.touch()
        assert list(theirs) == [0, 2, 4, 6]


def test_identical_calls_of_two_maps_share_and_survive_a_cancel(ex, gate):
    first = ex.map(jobfns.double, range(3), chunksize=1, timeout=0.5)
    second = ex.map(jobfns.double, range(3), chunksize=1)
    with pytest.raises(cf.TimeoutError):
        next(first)
    gate.touch()
    assert list(second) == [0, 2, 4]


def test_terminate_ends_a_shared_job_only_for_its_last_future(ex, tmp_path):
    go = tmp_path / "go"
    a = ex.submit(jobfns.wait_for, str(go), 7)
    b = ex.submit(jobfns.wait_for, str(go), 7)
    deadline = time.monotonic() + 30
    while not b.running() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert a.terminate() is True
    with pytest.raises(JobFailed) as info:
        a.result(timeout=10)
    assert info.value.state is JobState.CANCELLED
    assert b.state is JobState.RUNNING
    go.touch()
    assert b.result(timeout=60) == 7


def test_a_map_that_gives_up_cancels_every_job_only_it_wanted(ex, gate):
    gave_up = ex.map(jobfns.double, range(4), chunksize=2, timeout=0.5)
    with pytest.raises(cf.TimeoutError):
        next(gave_up)  # as the stdlib's map: the future that timed out is cancelled too
    chunks = [r for r in ex.store.select() if r.name.startswith("double")]
    assert len(chunks) == 2
    assert {r.state for r in chunks} == {JobState.CANCELLED}


def test_futures_sharing_a_job_cancelled_at_once_from_threads_cancel_it(ex, gate, tmp_path):
    counter = tmp_path / "runs"
    fs = [ex.submit(jobfns.count_run, str(counter), 6) for _ in range(4)]
    start = threading.Barrier(len(fs))

    def cancel(f):
        start.wait()
        return f.cancel()

    threads = [cf.ThreadPoolExecutor(1) for _ in fs]
    answers = [t.submit(cancel, f) for t, f in zip(threads, fs, strict=True)]
    assert [a.result(timeout=30) for a in answers] == [True] * len(fs)
    for t in threads:
        t.shutdown()
    assert ex.store.get(fs[0].key).state is JobState.CANCELLED  # the last one cancelled it
    gate.touch()
    time.sleep(0.5)
    assert not counter.exists()


def test_a_local_workdir_that_does_not_exist_or_is_no_directory_is_refused(
    ex, tmp_path, monkeypatch
):
    missing, a_file = tmp_path / "missing", tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(ResourceError, match=f"workdir {missing} does not exist: create it"):
        ex.options(workdir=str(missing)).submit_shell("true")
    with pytest.raises(ResourceError, match=f"workdir {a_file} is not a directory"):
        ex.options(workdir=str(a_file)).submit(jobfns.double, 1)
    monkeypatch.setenv("HOME", str(tmp_path))  # ~ is expanded, a relative one made absolute
    with pytest.raises(ResourceError, match=f"workdir {tmp_path}/nowhere does not exist"):
        ex.options(workdir="~/nowhere").submit_shell("true")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here").mkdir()
    f = ex.options(workdir="here").submit_shell("pwd")
    assert f.result(timeout=60).stdout == f"{tmp_path}/here\n"
    assert ex.store.get(f.key).resources["workdir"] == f"{tmp_path}/here"
    assert ex.store.get(f.key).state is JobState.COMPLETED


def test_wait_all_waits_for_every_job_of_the_session(ex):
    """DRMAA's synchronize over the session's jobs: those of every view of the executor."""
    fs = [ex.submit(jobfns.sleep_then, 0.3, i) for i in range(2)]
    shell = ex.options(name="late").submit_shell("sleep 0.5; echo late")
    done, not_done = ex.wait_all(timeout=60)
    assert not not_done and set(done) == {*fs, shell}
    assert [f.result() for f in fs] == [0, 1] and shell.result().stdout == "late\n"
    assert ex.wait_all(timeout=0) == (set(), set())  # nothing left to follow
    slow = ex.submit(jobfns.sleep_then, 30, "slow")
    done, not_done = ex.wait_all(timeout=0.2)
    assert not done and not_done == {slow}
    slow.terminate()


def test_a_map_over_a_range_is_a_bulk_job(ex, tmp_path):
    """DRMAA's bulk jobs: a map over range(begin, end + 1, step) gives each job its own value
    as HPCEXEC_ARRAY_INDEX and in {array_index} of its output paths; another map, its place."""
    out = ex.options(stdout=str(tmp_path / "out.{array_index}.txt"))
    got = list(out.map(jobfns.print_index, range(10, 16, 2)))
    assert got == ["10", "12", "14"]
    for i in (10, 12, 14):
        assert (tmp_path / f"out.{i}.txt").read_text() == f"index {i}\n"
    assert list(ex.map(jobfns.print_index, ["a", "b"])) == ["0", "1"]  # places, from 0
    with pytest.raises(ResourceError, match=r"stdout uses \{array_index\}, which only the jobs"):
        out.submit(jobfns.print_index, 1)
    with pytest.raises(ResourceError, match="a job per call; drop chunksize=2"):
        out.map(jobfns.print_index, range(4), chunksize=2)
    # chunks (the local default) count their calls' indices on by the range's step
    assert list(ex.map(jobfns.print_index, range(5, 20, 5), chunksize=3)) == ["5", "10", "15"]
