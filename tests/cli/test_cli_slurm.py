"""The hpcexec command against the live SLURM, here and through the loopback sshd."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sshtest import DEST, KEY, KNOWN


def squeue_reason(job_id: str) -> str:
    out = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True
    ).stdout
    return out.strip()


@pytest.fixture
def slurm(slurm_cluster, cli):
    """hpcexec with --backend slurm."""

    def run(*args, **kw):
        return cli("--backend", "slurm", *args, **kw)

    run.json = lambda *a, **kw: cli.json("--backend", "slurm", *a, **kw)
    run.error = lambda *a, **kw: cli.error("--backend", "slurm", *a, **kw)
    return run


@pytest.mark.slurm
def test_slurm_submit_wait_logs_show(slurm):
    job = slurm.json(
        "submit",
        "--time",
        "0:05:00",
        "--mem",
        "100M",
        "--name",
        "cli-slurm",
        "--",
        'echo "job $SLURM_JOB_ID on $HPCEXEC_NODELIST"',
    )[0]
    assert job["backend"] == "slurm" and job["job_id"].isdigit()
    script = (Path(job["jobdir"]) / "submit.sh").read_text()
    assert "#SBATCH --time=00:05:00" in script and "#SBATCH --job-name=cli-slurm" in script
    assert "#SBATCH --mem=100M" in script
    done = slurm.json("wait", job["job_id"])  # the scheduler's id names the job too
    assert [(j["state"], j["exit_code"]) for j in done] == [("completed", 0)]
    assert slurm("logs", job["key"]).out.startswith(f"job {job['job_id']} on ")
    shown = slurm.json("show", job["key"][:10])
    assert shown["info"]["exit_code"] == 0 and shown["info"]["nodelist"]
    listed = slurm.json("jobs", "--state", "completed")  # --backend slurm: a filter here
    assert [j["key"] for j in listed] == [job["key"]]
    assert slurm.json("jobs", "--backend", "local") == []


@pytest.mark.slurm
def test_report_reads_slurms_accounting(slurm):
    """A shell job's CPU time and memory come from sacct (jobacct_gather/linux): no runner
    measured them."""
    body = "python3 -c 'import time; x = bytearray(200_000_000); time.sleep(3)'"
    job = slurm.json("submit", "--mem", "1G", "--time", "0:30:00", "--name", "acct", "--", body)
    slurm("wait", job[0]["key"])
    data = slurm.json("report", job[0]["key"])
    (row,) = data["jobs"]
    assert row["state"] == "completed" and row["ran"] >= 3 and row["cpu_seconds"] is not None
    assert 150 <= row["mem_used_mb"] <= 1024 and row["mem_asked_mb"] == 1024
    assert [t.split(", ran")[0] for t in data["advice"]] == ["acct: time limit 00:30:00"]


@pytest.mark.slurm
def test_slurm_refusal_and_failure(slurm):
    line = slurm.error("submit", "--queue", "nosuch", "--", "true")
    assert "the job was not submitted: slurm refused the job" in line
    assert "invalid partition" in line
    bad = slurm.json("submit", "--time", "0:05:00", "--", "exit 4")[0]
    r = slurm("--json", "wait", bad["key"], ok=False)
    assert r.code == 3 and r.json()[0]["state"] == "failed" and r.json()[0]["exit_code"] == 4


@pytest.mark.slurm
def test_slurm_hold_release_cancel_by_key(slurm):
    job = slurm.json(
        "submit", "--time", "0:05:00", "--native=--begin=now+1hour", "--", "echo later"
    )[0]
    assert job["state"] == "pending" and job["job_id"]
    assert slurm.json("hold", job["key"])[0]["state"] == "held"
    assert "JobHeld" in squeue_reason(job["job_id"])
    assert slurm.json("release", job["job_id"])[0]["state"] == "pending"
    assert "JobHeld" not in squeue_reason(job["job_id"])
    assert slurm.json("cancel", job["key"])[0]["state"] == "cancelled"
    assert squeue_reason(job["job_id"]) in ("", "CANCELLED None")


@pytest.mark.slurm
def test_slurm_submit_held_then_release(slurm):
    job = slurm.json("submit", "--hold", "--time", "0:05:00", "--", "echo released")[0]
    assert job["state"] == "held" and job["job_id"]
    slurm("release", job["key"])
    assert slurm.json("wait", job["key"])[0]["state"] == "completed"
    assert slurm("logs", job["key"]).out == "released\n"


@pytest.mark.slurm
@pytest.mark.ssh
def test_remote_slurm_through_a_profile(slurm_cluster, sshd, cli, tmp_path):
    remote = tmp_path / "remote job files"
    (cli.cwd / "hpcexec.toml").write_text(f"""\
[profiles.loop]
backend = "slurm"
host = "{DEST}"
python = "{sys.executable}"
remote_dir = "{remote}"
ssh_key = "{KEY}"
known_hosts = "{KNOWN}"
[profiles.loop.resources]
time = "0:05:00"
""")
    job = cli.json("--profile", "loop", "submit", "--", "echo remote $SLURM_JOB_ID")[0]
    assert job["host"] == DEST and job["jobdir"].startswith(str(remote))
    r = cli("jobs")  # no profile: that host is not asked
    assert "shown as last seen" in r.err and DEST in r.err
    assert cli.json("--profile", "loop", "wait", job["key"])[0]["state"] == "completed"
    # Without --profile, the profile naming the record's host says how to reach it.
    assert cli("logs", job["key"]).out == f"remote {job['job_id']}\n"
    data = cli.json("--profile", "loop", "backends")
    assert data["host"] == DEST and data["auto"] == "slurm"


@pytest.mark.slurm
def test_adopt_a_job_started_outside_hpcexec(slurm, tmp_path):
    """hpcexec adopt ID: a record for a job sbatch started by hand, followed to its end, its
    output read from the file SLURM names; adopting again finds the same record."""
    out = tmp_path / "by-hand.out"
    job_id = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--output={out}",
            "--job-name=by-hand",
            "--wrap",
            "sleep 2; echo made by hand; exit 3",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (rec,) = slurm.json("adopt", job_id)
    assert (rec["key"], rec["name"], rec["job_id"]) == (f"slurm-{job_id}", "by-hand", job_id)
    assert rec["state"] in ("pending", "running")
    (done,) = slurm.json("wait", job_id, ok=False)  # it failed: wait says so
    assert (done["state"], done["exit_code"]) == ("failed", 3)
    assert slurm("logs", f"slurm-{job_id}").out == "made by hand\n"
    assert slurm.json("adopt", job_id)[0]["state"] == "failed"  # the same record
    assert "knows no job 999999" in slurm.error("adopt", "999999")
    failed = slurm.error("--backend", "local", "adopt", job_id)
    assert "the local backend has no scheduler to adopt a job from" in failed
