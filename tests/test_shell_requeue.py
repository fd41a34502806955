"""Shell jobs that opt in to requeue (``requeue=N``): their script traps the warning signal,
stops the body, ends ``checkpointed`` and runs again with ``$HPCEXEC_RESTART`` counting the
earlier runs (hpcexec/script.py, hpcexec/jobspec.py); the local backend."""

from __future__ import annotations

import os
import time

import pytest

from hpcexec import JobFailed, JobState
from hpcexec.checkpoint import REQUEUED_REASON


def restartable(progress: str, steps: int, step_s: float) -> str:
    """A body counting to ``steps`` that keeps its count in ``progress`` and resumes from
    it; it logs each run's ``HPCEXEC_RESTART`` to ``progress.runs``."""
    return f"""echo "$HPCEXEC_RESTART" >> {progress}.runs
n=0; [ -f {progress} ] && read -r n < {progress}
while [ "$n" -lt {steps} ]; do sleep {step_s}; n=$((n + 1)); echo "$n" > {progress}; done
echo "done at $n"
"""


def test_a_restartable_shell_body_completes_past_its_walltime(ex, tmp_path):
    """Counting to 30 at 0.1 s a step (~3 s of work plus start-up) under a walltime of 3 s
    warned 2 s ahead: interrupted, requeued, resumed from its file, done."""
    progress = tmp_path / "progress"
    f = ex.options(time="0:00:03", requeue=5, checkpoint_grace=2).submit_shell(
        restartable(str(progress), 30, 0.1)
    )
    r = f.result(timeout=120)
    assert r.returncode == 0 and "done at 30" in r.stdout
    runs = [int(x) for x in (tmp_path / "progress.runs").read_text().split()]
    assert len(runs) >= 2 and runs == list(range(len(runs)))
    rec = f.record
    assert rec.state is JobState.COMPLETED and len(rec.attempts) == len(runs) - 1
    assert all(a["reason"] == REQUEUED_REASON and a["exit_code"] == 140 for a in rec.attempts)
    assert f.info().requeues == len(runs) - 1


def test_a_body_that_never_ends_is_stopped_at_each_warning_then_times_out(ex, tmp_path):
    t0 = time.monotonic()
    f = ex.options(time="0:00:02", requeue=1, checkpoint_grace=1).submit_shell(
        f"sh -c 'echo $$ >> {tmp_path}/pids; exec sleep 600'"
    )
    with pytest.raises(JobFailed, match="requeue=1"):
        f.result(timeout=90)
    assert time.monotonic() - t0 < 30  # stopped at the warnings, not at the end of the sleep
    rec = f.record
    assert rec.state is JobState.TIMEOUT and len(rec.attempts) == 1
    assert rec.exit_code == 140 and rec.reason.startswith("checkpointed")
    for pid in (tmp_path / "pids").read_text().split():
        assert not os.path.exists(f"/proc/{pid}"), "the sleep outlived its job"


def test_a_shell_job_without_requeue_is_not_warned_and_times_out(ex):
    f = ex.options(time="0:00:02", checkpoint_grace=1).submit_shell("sleep 600")
    with pytest.raises(JobFailed):
        f.result(timeout=60)
    assert f.record.state is JobState.TIMEOUT and f.record.attempts == []
    assert "requeue" not in f.record.resources and "checkpoint_grace" not in f.record.resources


def test_only_a_requeued_shell_jobs_script_changes(ex):
    body = "echo hi"
    plain = ex.job_script(body)
    assert ex.options(checkpoint_grace=5).job_script(body) == plain
    requeued = ex.options(requeue=2).job_script(body)
    assert requeued != plain and "HPCEXEC_RESTART" in requeued and "USR2" in requeued
    assert "HPCEXEC_RESTART" not in plain and "USR2" not in plain


def test_stdin_and_exit_codes_reach_a_requeueable_body(ex, tmp_path):
    (tmp_path / "in.txt").write_text("from stdin\n")
    opts = ex.options(requeue=1, workdir=str(tmp_path), stdin="in.txt")
    r = opts.submit_shell("cat; exit 3", check=False).result(timeout=60)
    assert r.returncode == 3 and r.stdout == "from stdin\n"
    assert (
        opts.submit_shell("cat >/dev/null; echo $HPCEXEC_RESTART").result(timeout=60).stdout
        == "0\n"
    )


def test_a_job_file_opts_in_as_a_shell_body_does(ex, tmp_path):
    path = tmp_path / "run.sh"
    path.write_text("#!/bin/bash\necho $HPCEXEC_RESTART\n")
    assert "HPCEXEC_RESTART" not in ex.file_script(path)
    assert "HPCEXEC_RESTART" in ex.options(requeue=1).file_script(path)
    f = ex.options(requeue=1, checkpoint_grace=7).submit_file(path)
    assert f.result(timeout=60).stdout == "0\n"
    assert (f.record.resources["requeue"], f.record.resources["checkpoint_grace"]) == (1, 7)
