"""Behaviour every scheduler backend shares, run against each live daemon that
tests/clusters/ starts. Scheduler-specific checks stay in test_<scheduler>_live.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import jobfns
import pytest
from livecluster import running

import hpcexec
from hpcexec import JobFailed, JobState
from hpcexec.layout import PAYLOAD


def test_separate_submits_are_coalesced(live):
    ex, spec = live
    fs = [ex.submit(jobfns.add, i, 1) for i in range(20)]
    assert [f.result(timeout=180) for f in fs] == [i + 1 for i in range(20)]
    assert ex.session.calls[spec["submit"]] <= 2


def test_map_is_one_array_submission(live):
    ex, spec = live
    out = list(ex.map(jobfns.double, range(30), timeout=180))
    assert out == [2 * x for x in range(30)]
    assert ex.session.calls[spec["submit"]] == 1
    records = sorted(ex.store.select(), key=lambda r: r.array_index)
    assert [r.array_index for r in records] == list(range(30))
    array_id = re.match(r"\d+", records[0].job_id).group()
    elements = {ex.session.backend.element_id(array_id, i) for i in range(30)}
    assert {r.job_id for r in records} <= elements  # each ran in an element of that array


def test_status_calls_grow_with_time_not_jobs(live):
    ex, spec = live
    assert list(ex.map(jobfns.double, range(40), timeout=180)) == [2 * x for x in range(40)]
    assert ex.session.calls[spec["status"]] < 40, dict(ex.session.calls)


def test_shell_job_output_and_failure(live):
    ex, _ = live
    r = ex.submit_shell('echo "on $HPCEXEC_NODELIST"; echo err >&2').result(timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("on ") and r.stderr == "err\n"
    with pytest.raises(JobFailed) as info:
        ex.submit_shell("echo bad >&2; exit 3").result(timeout=120)
    assert info.value.exit_code == 3 and info.value.state is JobState.FAILED
    assert "bad" in str(info.value)


def test_remote_exception_keeps_its_type(live):
    ex, _ = live
    with pytest.raises(jobfns.CustomError):
        ex.submit(jobfns.raise_custom).result(timeout=120)


def test_terminate_running_job(live):
    ex, _ = live
    f = ex.submit(jobfns.sleep_then, 60)
    running(f)
    assert f.terminate() is True
    with pytest.raises(JobFailed) as info:
        f.result(timeout=60)
    assert info.value.state is JobState.CANCELLED
    assert info.value.reason == "terminated on request"


def test_refused_submission_fails_the_future_with_the_message(live):
    ex, spec = live
    f = ex.options(queue=spec["bad_queue"]).submit(jobfns.double, 1)
    with pytest.raises(JobFailed, match=spec["refusal"]):
        f.result(timeout=60)


def test_rerun_reuses_finished_results_without_submitting(live, cache):
    ex, spec = live
    assert ex.submit(jobfns.double, 21).result(timeout=120) == 42
    with hpcexec.Executor(
        spec["backend"], cache_dir=cache, poll_interval=0.2, **spec["connect"]
    ) as again:
        f = again.options(time="0:10:00").submit(jobfns.double, 21)
        assert f.done() and f.result() == 42
        assert again.session.calls[spec["submit"]] == 0


def test_suspend_and_resume(live):
    ex, _ = live
    f = ex.submit(jobfns.sleep_then, 3, "done")
    running(f)
    assert f.suspend() is True and f.state is JobState.SUSPENDED
    assert f.resume() is True
    assert f.result(timeout=120) == "done"


# -- elements of an array run each other's tasks (reuse_slots) --------------------------------


def test_elements_reuse_their_slots_for_tasks_not_started(live):
    ex, _ = live
    two = ex.options(array_limit=2)  # two elements at a time: the rest wait, so get taken
    fs = [two.submit(jobfns.where, i) for i in range(16)]
    got = [f.result(timeout=180) for f in fs]
    assert [g["i"] for g in got] == list(range(16))
    assert len({g["parent"] for g in got}) < 16  # some runners ran more than one task
    assert len({f.job_id for f in fs}) < 16  # and their records name the element that did
    for f, g in zip(fs, got, strict=True):
        assert g["index"] == str(f.record.array_index) == str(g["i"])
        assert g["job_id"] == f.job_id
        assert f.state is JobState.COMPLETED
        assert f.stdout() == f"task {g['i']} on stdout\n"  # its own output, nobody else's


def test_reuse_slots_off_gives_every_task_its_own_element(live):
    ex, _ = live
    fs = [ex.options(reuse_slots=False).submit(jobfns.where, i) for i in range(6)]
    got = [f.result(timeout=180) for f in fs]
    assert len({f.job_id for f in fs}) == 6
    assert len({g["parent"] for g in got}) == 6


def test_cancelling_a_task_its_array_has_not_started(live, tmp_path):
    ex, _ = live
    gate, ran = tmp_path / "gate", tmp_path / "ran"
    one = ex.options(array_limit=1)
    first = one.submit(jobfns.wait_for, str(gate), "first")
    rest = [one.submit(jobfns.count_run, str(ran), i) for i in range(1, 4)]
    running(first)
    assert rest[-1].cancel()  # the task an element would take next
    gate.touch()
    assert first.result(timeout=120) == "first"
    assert [f.result(timeout=120) for f in rest[:-1]] == [10, 20]
    assert rest[-1].cancelled()
    assert sorted(ran.read_text().split()) == ["1", "2"]  # the cancelled one never ran


def test_a_job_whose_payload_is_gone_fails_saying_why(live):
    ex, _ = live
    f = ex.options(hold=True).submit(jobfns.double, 21)
    payload = f"{f.record.jobdir}/{PAYLOAD}"
    os.unlink(payload)  # the loopback "remote" host shares this filesystem
    assert f.release() is True
    with pytest.raises(JobFailed) as info:
        f.result(timeout=180)
    assert info.value.state is JobState.FAILED and info.value.exit_code == 1
    why = f"cannot load the payload {payload}: FileNotFoundError"
    assert info.value.reason.startswith(why) and f"hpcexec: {why}" in str(info.value)


def test_lost_store_rebuilds_records_with_their_job_ids(live, cache, tmp_path):
    """A cache whose store is lost after one job finished and another was submitted (held)
    by a client that then died: each record is rebuilt with its job id, and neither job is
    submitted again."""
    _, spec = live
    counter = tmp_path / "runs"
    opts = dict(cache_dir=str(cache), poll_interval=0.2, time="0:10:00", **spec["connect"])
    with hpcexec.Executor(spec["backend"], **opts) as first:
        done = first.options(key="lost-done").submit(jobfns.count_run, str(counter), 1)
        assert done.result(timeout=120) == 10
        done_id = done.job_id
    client = f"""if True:
        import os, time, hpcexec, jobfns
        ex = hpcexec.Executor({spec["backend"]!r}, **{opts!r})
        f = ex.options(key="lost-held", hold=True).submit(jobfns.count_run, {str(counter)!r}, 2)
        while not f.job_id:
            time.sleep(0.1)
        print(f.job_id, flush=True)
        os._exit(0)  # dies, leaving its job held in the queue
    """
    out = subprocess.run(
        [sys.executable, "-c", client],
        cwd=Path(jobfns.__file__).parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    held_id = out.stdout.strip()
    assert held_id, out.stderr
    for suffix in ("", "-wal", "-shm"):
        (cache / f"jobs.sqlite{suffix}").unlink(missing_ok=True)
    with hpcexec.Executor(spec["backend"], **opts) as again:
        f = again.options(key="lost-done").submit(jobfns.count_run, str(counter), 1)
        # rebuilt from its job directory when the gathered submission looks (not run again)
        assert f.result(timeout=60) == 10 and f.job_id == done_id
        held = again.options(key="lost-held", hold=True).submit(jobfns.count_run, str(counter), 2)
        assert held.job_id == held_id and held.state is JobState.HELD
        assert held.release()
        assert held.result(timeout=120) == 20 and held.job_id == held_id
    assert sorted(counter.read_text().split()) == ["1", "2"]


def test_lost_store_array_whose_elements_run_each_others_tasks(live, cache, tmp_path):
    """The client died after submitting one array (elements run tasks not started, one
    long), and the store was lost: the rebuilt records know their element and array, so
    each task is followed to the element that ran it, runs once, and gives its own result."""
    _, spec = live
    counter = tmp_path / "runs"
    seconds = [0.5, 0.5, 6.0, 0.5]
    opts = dict(cache_dir=str(cache), poll_interval=0.2, time="0:10:00", **spec["connect"])
    client = f"""if True:
        import os, time, hpcexec, jobfns
        ex = hpcexec.Executor({spec["backend"]!r}, **{opts!r}).options(array_limit=2)
        fs = [ex.submit(jobfns.count_run, {str(counter)!r}, i, s)
              for i, s in enumerate({seconds!r})]
        while not all(f.job_id for f in fs):
            time.sleep(0.1)
        os._exit(0)  # dies, leaving its array in the queue
    """
    subprocess.run(
        [sys.executable, "-c", client], cwd=Path(jobfns.__file__).parent, check=True, timeout=120
    )
    for suffix in ("", "-wal", "-shm"):
        (cache / f"jobs.sqlite{suffix}").unlink(missing_ok=True)
    with hpcexec.Executor(spec["backend"], **opts) as again:
        fs = [
            again.options(array_limit=2).submit(jobfns.count_run, str(counter), i, s)
            for i, s in enumerate(seconds)
        ]
        assert [f.record.array_index for f in fs] == [0, 1, 2, 3]
        assert [f.result(timeout=180) for f in fs] == [0, 10, 20, 30]
        assert all(f.state is JobState.COMPLETED for f in fs)
    assert sorted(counter.read_text().split()) == ["0", "1", "2", "3"]
