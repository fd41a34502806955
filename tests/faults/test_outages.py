"""Daemons gone for a minute while futures are pending, jobs cancelled from outside, and two
processes filling one cache: nothing fails that should not, nothing hangs, nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jobfns
import pytest
from livecluster import CLUSTERS, running
from sshtest import PORT, SSHD_DIR, drop_connection, gone

import hpcexec
from hpcexec import JobFailed, JobState

HERE = Path(__file__).parent.parent
OUTAGE = 60.0  # seconds


def _all_have_ids(fs, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not all(f.job_id for f in fs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(f.job_id for f in fs)


@pytest.mark.slurm
def test_slurmctld_down_for_a_minute(sex):
    fs = [sex.submit(jobfns.sleep_then, 2, i) for i in range(6)]
    _all_have_ids(fs)
    subprocess.run(["scontrol", "shutdown", "slurmctld"], check=True)
    try:
        time.sleep(OUTAGE)  # every poll fails meanwhile; no future may fail for it
        assert not any(f.done() and f.exception() for f in fs)
    finally:
        subprocess.run(
            ["bash", str(CLUSTERS / "slurm.sh"), "start"], check=True, capture_output=True
        )
    assert [f.result(timeout=300) for f in fs] == list(range(6))


@pytest.mark.slurm
@pytest.mark.ssh
def test_sshd_down_for_a_minute_under_a_remote_executor(rex):
    fs = [rex.submit(jobfns.sleep_then, 2, i) for i in range(4)]
    _all_have_ids(fs)
    pidfile = SSHD_DIR / f"sshd_{PORT}.pid"
    master = int(pidfile.read_text())
    os.kill(master, signal.SIGTERM)  # no new connections...
    try:
        deadline = time.monotonic() + 10
        while not gone(master):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        drop_connection(rex.session.transport)  # ...and ours is cut
        time.sleep(OUTAGE)
        assert not any(f.done() and f.exception() for f in fs)
    finally:
        subprocess.run(
            ["bash", str(CLUSTERS / "sshd.sh"), "start"], check=True, capture_output=True
        )
    assert [f.result(timeout=300) for f in fs] == list(range(4))
    assert rex.session.transport.connections_opened >= 2


@pytest.mark.parametrize(
    "scheduler",
    [pytest.param("slurm", marks=pytest.mark.slurm), pytest.param("sge", marks=pytest.mark.sge)],
)
def test_cancelled_from_outside_fails_at_once(scheduler, request):
    ex = request.getfixturevalue({"slurm": "sex", "sge": "gex"}[scheduler])
    cancel = {"slurm": "scancel", "sge": "qdel"}[scheduler]
    f = ex.submit(jobfns.sleep_then, 120)
    running(f)
    t0 = time.monotonic()
    subprocess.run([cancel, f.job_id], check=True, capture_output=True)
    with pytest.raises(JobFailed) as info:
        f.result(timeout=120)
    # Judged from the scheduler's own words (SGE's accounting record comes a moment after
    # the job leaves qstat), not guessed after NEVER_STARTED_AFTER (30 s) or LOST_AFTER. A
    # count of polls would depend on how often the status is asked just after a submission.
    assert time.monotonic() - t0 < 10
    assert info.value.state is JobState.CANCELLED


CLIENT = """
import sys, hpcexec, jobfns
cache, counter, first, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with hpcexec.Executor(cache_dir=cache, poll_interval=0.05) as ex:
    fs = [ex.submit(jobfns.count_run, counter, i) for i in range(first, first + n)]
    assert [f.result() for f in fs] == [i * 10 for i in range(first, first + n)]
"""


def test_two_processes_submitting_500_jobs_each_into_one_cache(tmp_path):
    cache, counter, n = tmp_path / "cache", tmp_path / "counter", 500
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(cache), str(counter), str(first), str(n)],
            env=env,
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            text=True,
        )
        for first in (0, 100000)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        assert "locked" not in err and "Traceback" not in err
    assert len(hpcexec.Store(cache).select(state="completed")) == 2 * n
    ran = sorted(map(int, counter.read_text().split()))
    assert ran == list(range(n)) + list(range(100000, 100000 + n))
