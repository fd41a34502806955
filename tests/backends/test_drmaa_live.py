"""The DRMAA job-template keys on the live SLURM and Grid Engine (tests/clusters/): one shell
job each with stdin, join_output, begin and mail, submitted and run by the real scheduler."""

from __future__ import annotations

import subprocess
import time
from datetime import timedelta

import pytest

from hpcexec.resourcevalues import instant_epoch

BODY = "date +%s > started; tac; echo to-stderr >&2; echo done"


def _run_everything(executor, tmp_path):
    """Submit the job, return its result, its record and the time the job itself saw."""
    (tmp_path / "in.txt").write_text("first\nsecond\n")
    job = executor.options(
        stdin="in.txt",
        workdir=str(tmp_path),
        join_output=True,
        begin=timedelta(seconds=3),
        mail="root@localhost:begin,end,fail",
    )
    f = job.submit_shell(BODY)
    got = f.result(timeout=180)
    return f, got, int((tmp_path / "started").read_text())


def _check(f, got, started):
    rec = f.record
    # stdin fed the job, stderr went into stdout, in the order written
    assert got.stdout == "second\nfirst\nto-stderr\ndone\n" and got.stderr == ""
    # the scheduler did not start it before its begin time
    assert started >= int(instant_epoch(rec.resources["begin"]))
    assert rec.resources["mail"] == {"to": "root@localhost", "on": ["begin", "end", "fail"]}


@pytest.mark.slurm
def test_slurm_runs_a_job_with_stdin_join_output_begin_and_mail(sex, tmp_path):
    f, got, started = _run_everything(sex, tmp_path)
    _check(f, got, started)
    shown = subprocess.run(
        ["scontrol", "show", "job", f.job_id], capture_output=True, text=True
    ).stdout
    if shown:  # still in slurmctld's memory (MinJobAge): the mail settings it accepted
        assert "MailUser=root@localhost" in shown and "MailType=BEGIN,END,FAIL" in shown


@pytest.mark.sge
def test_sge_runs_a_job_with_stdin_join_output_begin_and_mail(gex, tmp_path):
    # SGE may fail to send the mail (no mail transfer agent here): the job still runs.
    f, got, started = _run_everything(gex, tmp_path)
    _check(f, got, started)
    assert f.job_id.isdigit() and time.time() >= started
