"""Whole cycles through the public API against the fake PBS Pro, Torque and LSF commands in
tests/fakesched/ (real PBS Pro, Torque and LSF have no Debian package here).

PATH is reduced to one temporary directory holding symlinks to the chosen flavour's fake
commands and to the few system tools job scripts use, because /usr/bin has the real SLURM
and Grid Engine commands on these machines (whose qsub/qstat would shadow the fakes and
whose sbatch would win backend="auto").
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jobfns
import pytest
from test_driver import exit_128_plus_n_reads_as_signal_n, failed_dependency_cancels_its_dependents

import hpcexec
from hpcexec import JobFailed, JobState
from hpcexec.backends import SCHEDULERS

FAKE = Path(__file__).parent.parent / "fakesched"
COMMANDS = {
    "pbspro": ["qsub", "qstat", "qdel", "qhold", "qrls", "pbs_rstat", "mpiexec"],
    "torque": ["qsub", "qstat", "qdel", "qhold", "qrls", "mpiexec"],
    "lsf": ["bsub", "bjobs", "bkill", "bstop", "bresume", "blaunch"],
}
SUBMIT = {"pbspro": "qsub", "torque": "qsub", "lsf": "bsub"}
TOOLS = ["bash", "sh", "env", "mv", "cat", "sleep", "rm", "mkdir", "true", "false"]
FLAVORS = list(COMMANDS)


@pytest.fixture(params=FLAVORS)
def flavor(request, tmp_path, monkeypatch):
    """A PATH with only this flavour's fake commands and basic tools; the fake's state in
    tmp_path/sched. Whatever the fake started is killed at the end."""
    name = request.param
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in COMMANDS[name]:
        (bin_dir / command).symlink_to(FAKE / command)
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "python3").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKESCHED_DIR", str(tmp_path / "sched"))
    monkeypatch.setenv("FAKESCHED_FLAVOR", name)
    # Poll at least every 0.3 s (backoff would otherwise stretch to 30 s between polls).
    monkeypatch.setattr(SCHEDULERS[name], "poll_max", 0.3)
    yield name
    subprocess.run([sys.executable, str(FAKE / "_fakesched.py"), "cleanup"], check=False)


@pytest.fixture
def fex(flavor, tmp_path):
    executor = hpcexec.Executor(backend=flavor, cache_dir=tmp_path / "cache", poll_interval=0.1)
    yield executor
    for f in executor.session.futures():
        if not f.done():
            f.terminate()
    _, not_done = cf.wait(executor.session.futures(), timeout=30)
    executor.shutdown(wait=not not_done)
    assert not not_done, f"futures still pending after the test: {not_done}"


def _until(check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert check()


def test_call_then_map_as_one_array(fex, flavor):
    f = fex.submit(jobfns.env, "HPCEXEC_JOB_ID", "HPCEXEC_NODELIST", "HPCEXEC_ARRAY_INDEX")
    got = f.result(timeout=30)
    assert got == {
        "HPCEXEC_JOB_ID": f.job_id,
        "HPCEXEC_NODELIST": "fakenode01",
        "HPCEXEC_ARRAY_INDEX": "",
    }
    assert f.state is JobState.COMPLETED and f.record.backend == flavor
    calls = fex.session.calls
    before = calls[SUBMIT[flavor]]
    out = list(
        fex.map(
            jobfns.env,
            ["HPCEXEC_ARRAY_INDEX"] * 5,
            ["HPCEXEC_JOB_ID"] * 5,
            [f"UNSET{i}" for i in range(5)],
            timeout=60,
        )
    )
    assert calls[SUBMIT[flavor]] == before + 1  # five jobs, one array submission
    assert [o["HPCEXEC_ARRAY_INDEX"] for o in out] == [str(i) for i in range(5)]
    elements = sorted(
        (r for r in fex.store.select() if r.array_index is not None), key=lambda r: r.array_index
    )
    assert [r.array_index for r in elements] == list(range(5))
    assert [o["HPCEXEC_JOB_ID"] for o in out] == [r.job_id for r in elements]
    first = elements[0].job_id
    expected = {
        "pbspro": "[0].pbs-fake01.example.org",
        "torque": "[0].torque-fake01",
        "lsf": "[1]",
    }[flavor]  # LSF counts array elements from 1
    assert first.endswith(expected)


def test_shell_output_and_nonzero_exit(fex, flavor):
    r = fex.submit_shell('echo "out $HPCEXEC_JOB_ID"; echo err >&2').result(timeout=30)
    assert r.returncode == 0
    assert r.stdout.startswith("out ") and r.stdout.count("\n") == 1  # no LSF job report
    assert r.stderr == "err\n"
    # Shell jobs submitted together become one array: each element's output is its own.
    fs = [fex.submit_shell(f'echo "element {i}"; echo "e{i}" >&2') for i in range(3)]
    assert [(f.result(timeout=30).stdout, f.result().stderr) for f in fs] == [
        (f"element {i}\n", f"e{i}\n") for i in range(3)
    ]
    assert any(f.record.array_index is not None for f in fs)
    with pytest.raises(JobFailed) as info:
        fex.submit_shell("echo bad >&2; exit 3").result(timeout=30)
    assert info.value.exit_code == 3 and info.value.state is JobState.FAILED
    assert "bad" in str(info.value)


def test_cancel_a_held_job_and_release_another(fex, flavor):
    held = fex.options(hold=True).submit(jobfns.double, 9)
    kept = fex.options(hold=True).submit(jobfns.double, 8)
    _until(lambda: held.job_id and kept.job_id)
    _until(lambda: held.state is JobState.HELD)
    assert held.cancel() is True
    with pytest.raises(cf.CancelledError):
        held.result(timeout=5)
    # The scheduler itself now reports it deleted, which the backend reads as cancelled.
    backend = fex.session.backend
    r = subprocess.run(backend.status_argv([held.job_id]), capture_output=True, text=True)
    assert (
        backend.parse_status(r.stdout, r.stderr, r.returncode)[held.job_id].state
        is JobState.CANCELLED
    )
    time.sleep(0.3)
    assert kept.state is JobState.HELD and not kept.done()
    assert kept.release() is True
    assert kept.result(timeout=30) == 16


def test_dependency_runs_after_its_prerequisite(fex, flavor, tmp_path):
    log = tmp_path / "order"
    first = fex.submit_shell(f"sleep 0.5; echo first >> {log}")
    second = fex.options(after=first).submit_shell(f"echo second >> {log}")
    assert second.result(timeout=30).returncode == 0
    assert log.read_text() == "first\nsecond\n"


def test_auto_finds_the_flavour_on_path(flavor, tmp_path):
    ex = hpcexec.Executor(backend="auto", cache_dir=tmp_path / "cache", poll_interval=0.1)
    try:
        assert ex.session.backend.name == flavor
        assert ex.submit(jobfns.add, 2, 3).result(timeout=30) == 5
    finally:
        ex.shutdown(wait=True)


def test_refused_submission_fails_the_future(fex, flavor):
    f = fex.options(queue="nosuchqueue").submit(jobfns.double, 1)
    with pytest.raises(JobFailed, match="refused") as info:
        f.result(timeout=30)
    assert info.value.state is JobState.FAILED


STATUS = {"pbspro": "qstat", "torque": "qstat", "lsf": "bjobs"}


def test_unreadable_status_is_logged_once_a_poll_and_polling_goes_on(fex, flavor, tmp_path, caplog):
    # The status command runs but prints garbage while the flag file exists.
    flag = tmp_path / "garble"
    wrapper = tmp_path / "bin" / STATUS[flavor]
    wrapper.unlink()
    wrapper.write_text(
        f'#!/bin/bash\nif [ -e {flag} ]; then echo "<<garbled {{"; exit 0; fi\n'
        f'exec {FAKE / STATUS[flavor]} "$@"\n'
    )
    wrapper.chmod(0o755)
    caplog.set_level(logging.WARNING)
    flag.touch()
    f = fex.submit_shell("echo done")
    _until(lambda: sum("cannot read" in r.getMessage() for r in caplog.records) >= 2)
    assert not f.done() and f.job_id  # submitted; its state kept while unreadable
    lines = [r for r in caplog.records if "cannot read" in r.getMessage()]
    assert all(r.name == "hpcexec.schedqueue" and "\n" not in r.getMessage() for r in lines)
    assert not [r for r in caplog.records if "polling jobs failed" in r.getMessage()]
    flag.unlink()
    assert f.result(timeout=30).stdout == "done\n"


def test_a_failed_dependency_cancels_its_dependents(fex, flavor):
    failed_dependency_cancels_its_dependents(fex)


def test_a_job_exiting_128_plus_n_reads_as_killed_by_signal_n(fex, flavor):
    exit_128_plus_n_reads_as_signal_n(fex)


def test_a_callable_runs_in_every_task_under_the_launcher(fex):
    """The job script's launcher line (mpiexec -n 2, blaunch) runs the runner per task;
    the fake launchers set the MPI's or LSF's rank variables."""
    f = fex.options(nodes=1, ppn=2).submit(jobfns.task_rank)
    assert f.results(timeout=60) == [0, 1]


def test_a_failing_task_fails_the_job_under_the_launcher(fex):
    f = fex.options(nodes=1, ppn=2).submit(jobfns.rank_fails, 1, 120)
    with pytest.raises(ValueError, match="rank 1 failed") as info:
        f.result(timeout=60)
    assert info.value.task_rank == 1
