"""Faults survived: a client killed mid-workflow (calls and a chunked map), jobs killed from outside, result files
damaged under the cache, a disk that fills while a result is written."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import jobfns
import pytest
from livecluster import _live

import hpcexec
from hpcexec import JobFailed, JobState
from hpcexec.errors import IntegrityError
from hpcexec.layout import RESULT

HERE = Path(__file__).parent.parent

WORKFLOW = """
import sys, hpcexec, jobfns
backend, counter, out, n, cache = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
opts = {} if backend == "local" else {"time": "0:10:00"}
with hpcexec.Executor(backend, cache_dir=cache, poll_interval=0.2, **opts) as ex:
    singles = [ex.submit(jobfns.count_run, counter, i, 0.01) for i in range(n // 2)]
    mapped = list(ex.map(jobfns.count_run, [counter] * (n - n // 2), range(10000, 10000 + n - n // 2),
                         chunksize=2))
    results = [f.result() for f in singles] + mapped
with open(out, "w") as f:
    f.write(" ".join(map(str, results)))
"""


def _workflow(tmp_path: Path, backend: str, n: int) -> subprocess.Popen:
    script = tmp_path / "workflow.py"
    script.write_text(WORKFLOW)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [
            sys.executable,
            str(script),
            backend,
            str(tmp_path / "counter"),
            str(tmp_path / "out"),
            str(n),
            str(tmp_path / "cache"),
        ],
        env=env,
        cwd=tmp_path,
    )


@pytest.mark.parametrize("backend", ["local", pytest.param("slurm", marks=pytest.mark.slurm)])
def test_client_killed_during_a_500_task_workflow_then_run_again(backend, tmp_path):
    if backend != "local":
        _live(backend)
    n = 500
    counter = tmp_path / "counter"
    proc = _workflow(tmp_path, backend, n)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if counter.exists() and len(counter.read_text().split()) >= 20:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "out").exists(), "the client should die before the end"

    proc = _workflow(tmp_path, backend, n)
    assert proc.wait(timeout=600) == 0
    half = n // 2
    expected = [i * 10 for i in range(half)] + [(10000 + i) * 10 for i in range(n - half)]
    assert (tmp_path / "out").read_text().split() == [str(v) for v in expected]
    runs = sorted(map(int, counter.read_text().split()))
    assert runs == list(range(half)) + list(range(10000, 10000 + n - half))  # each exactly once

    # A third run submits nothing and runs nothing.
    proc = _workflow(tmp_path, backend, n)
    assert proc.wait(timeout=120) == 0
    assert sorted(map(int, counter.read_text().split())) == runs


@pytest.mark.slurm
def test_job_process_killed_with_sigkill_fails_within_two_polls(sex, tmp_path):
    pidfile = tmp_path / "pid"
    f = sex.submit(jobfns.write_pid_then_sleep, str(pidfile), 120)
    deadline = time.monotonic() + 60
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    before = sex.session.calls["squeue"]
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    with pytest.raises(JobFailed) as info:
        f.result(timeout=120)
    assert sex.session.calls["squeue"] - before <= 2
    assert info.value.state is JobState.FAILED
    assert info.value.signal == signal.SIGKILL or info.value.exit_code == 128 + signal.SIGKILL


# sacct as slurmdbd answered right after a job's batch script was killed, before it had
# recorded the job's end: the recorded answer, for whichever job is asked about.
LAGGING_SACCT = """#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = -j ] && ids=$2; shift; done
for id in $(echo "$ids" | tr , ' '); do
    grep -v '^# ' {recorded} | sed "s/1670/$id/g"
done
"""


@pytest.mark.slurm
def test_sigkill_told_while_accounting_has_not_recorded_the_end(sex, tmp_path, monkeypatch):
    """The interleaving of a flaky run, forced: squeue already says FAILED while sacct still
    answers as it did for a moment after a real kill -9 (allocation PENDING|0:0), so how the
    job ended must come from the queue, not from accounting."""
    recorded = HERE / "clusters" / "recorded" / "slurm_sacct_end_not_yet_recorded.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text(LAGGING_SACCT.format(recorded=shlex.quote(str(recorded))))
    (bin_dir / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    pidfile = tmp_path / "pid"
    f = sex.submit(jobfns.write_pid_then_sleep, str(pidfile), 120)
    deadline = time.monotonic() + 60
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    with pytest.raises(JobFailed, match="killed by SIGKILL") as info:
        f.result(timeout=120)
    assert (info.value.state, info.value.signal) == (JobState.FAILED, signal.SIGKILL)


def test_truncated_or_deleted_result_harms_only_that_job(cache):
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.02) as ex:
        fs = [ex.submit(jobfns.double, i) for i in range(3)]
        assert [f.result(timeout=60) for f in fs] == [0, 2, 4]
        paths = [f.record.path / RESULT for f in fs]
    paths[0].write_bytes(paths[0].read_bytes()[:20])  # truncated
    paths[1].unlink()  # deleted
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.02) as again:
        gs = [again.submit(jobfns.double, i) for i in range(3)]
        with pytest.raises(IntegrityError, match="not loaded"):
            gs[0].result(timeout=60)
        assert gs[1].result(timeout=60) == 2  # gone: run again
        assert gs[2].result(timeout=60) == 4  # untouched


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root: mounting a small tmpfs must work")
        pytest.skip("needs root to mount a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)], check=True
    )
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_filling_while_a_result_is_written(small_disk):
    cache = small_disk / "cache"
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.02) as ex:
        small = ex.submit(jobfns.double, 21)
        assert small.result(timeout=60) == 42
        big = ex.submit(jobfns.blob, 8 << 20)  # 8 MB into a 2 MB filesystem
        with pytest.raises(JobFailed, match="result could not be written") as info:
            big.result(timeout=60)
        assert info.value.state is JobState.FAILED
        assert small.record.state is JobState.COMPLETED and small.result() == 42
    leftovers = [p.name for p in big.record.path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []  # no half-written file left to fill the disk


@pytest.mark.parametrize("warm", ["1", "0"])
def test_job_that_exits_without_the_runner_is_failed_with_its_code(warm, cache, monkeypatch):
    monkeypatch.setenv("HPCEXEC_FORKSERVER", warm)  # from the fork server, and from a script
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.02) as ex:
        f = ex.submit(jobfns.hard_exit, 3)
        with pytest.raises(JobFailed, match="exited with code 3") as info:
            f.result(timeout=60)
    assert info.value.state is JobState.FAILED and info.value.exit_code == 3
