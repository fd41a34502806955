"""The hpcexec command on the local backend, run as a user runs it."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import jobfns
import pytest
from clirun import HPCEXEC

from hpcexec import JobFailed
from hpcexec.executor import detect_backend
from hpcexec.layout import PAYLOAD

CORES = str(len(os.sched_getaffinity(0)))  # what the local backend counts


def test_submit_then_jobs_show_logs_wait(cli):
    job = cli.json(
        "submit",
        "--name",
        "greet",
        "--time",
        "5",
        "--env",
        "WHO=world",
        "--",
        'echo "hello $WHO from $HPCEXEC_JOB_NAME"; echo warned >&2',
    )[0]
    assert job["name"] == "greet" and job["backend"] == "local"
    assert job["job_id"] and job["state"] in ("running", "completed")
    assert job["resources"]["time"] == 300 and job["resources"]["env"] == {"WHO": "world"}
    key = job["key"]
    done = cli.json("wait", key[:8])
    assert [(j["key"], j["state"], j["exit_code"]) for j in done] == [(key, "completed", 0)]
    assert cli("logs", key[:8]).out == "hello world from greet\n"
    assert cli("logs", "--stderr", key).out == "warned\n"
    assert cli.json("logs", key)["text"] == "hello world from greet\n"
    shown = cli.json("show", job["job_id"])  # a scheduler job id is a KEY too
    assert shown["key"] == key and shown["info"]["exit_code"] == 0
    assert shown["info"]["wallclock"] >= 0 and shown["stdout_path"].endswith("/stdout")
    text = cli("show", key[:6]).out
    assert "state      completed" in text and f"job id     {job['job_id']}" in text
    table = cli("jobs").out.splitlines()
    assert table[0].split() == ["KEY", "NAME", "HOST", "BACKEND", "ID", "STATE", "AGE", "WHAT"]
    assert table[1].split()[:6] == [
        key[:12],
        "greet",
        os.uname().nodename,
        "local",
        job["job_id"],
        "completed",
    ]
    assert table[1].endswith('echo "hello $WHO from $HPCEXEC_JOB_NA...')  # in short
    assert 'runs       echo "hello $WHO from $HPCEXEC_JOB_NAME"; echo warned >&2' in text
    assert cli.json("jobs", "--match", "HPCEXEC_JOB_NAME")[0]["key"] == key


def test_a_record_says_what_its_job_runs(cli, ex):
    shell = cli.json("submit", "--", "./prep.sh input.dat")[0]
    assert shell["name"] == "prep.sh" and shell["summary"] == "./prep.sh input.dat"
    launched = cli.json("submit", "--", "# set up\n\npython -u train.py --epochs 3")[0]
    assert launched["name"] == "train.py"
    assert launched["summary"] == "python -u train.py --epochs 3"
    f = ex.submit(jobfns.fail, "x" * 100)
    assert f.record.summary == "jobfns.fail('xxxxxxxxx...xxxxxxxxxx')"  # arguments in short
    m = ex.map(jobfns.double, range(3), chunksize=3)
    assert list(m) == [0, 2, 4]
    where = ("--cache-dir", str(ex.cache_dir))
    chunk = cli.json(*where, "jobs", "--match", "double\\(0\\) and 2 more")
    assert [j["summary"] for j in chunk] == ["jobfns.double(0) and 2 more"]


def test_submit_again_answers_from_the_cache_and_force_runs_it(cli):
    first = cli.json("submit", "--", "date", "+%N")[0]
    cli("wait", first["key"])
    again = cli("--json", "submit", "--", "date", "+%N")
    assert again.json()[0]["key"] == first["key"]
    assert again.json()[0]["job_id"] == first["job_id"]
    assert "ran before" in again.err and "--force" in again.err
    forced = cli.json("submit", "--force", "--", "date", "+%N")[0]
    assert forced["key"] == first["key"] and forced["job_id"] != first["job_id"]
    named = cli.json("submit", "--key", "my-run", "--", "true")[0]
    assert named["key"] == "my-run"
    assert cli("jobs").out.count("my-run") == 1  # a chosen key is shown whole


def test_several_words_are_one_quoted_command_one_word_a_shell_body(cli):
    a = cli.json("submit", "--", "printf", "%s|", "a b", "$HOME")[0]
    b = cli.json("submit", "--", "printf '%s|' 'a b' x; echo")[0]
    cli("wait", a["key"], b["key"])
    assert cli("logs", a["key"]).out == "a b|$HOME|"
    assert cli("logs", b["key"]).out == "a b|x|\n"


def test_wait_exit_status_says_how_the_jobs_ended(cli):
    bad = cli.json("submit", "--", "echo failing >&2; exit 3")[0]
    good = cli.json("submit", "--", "true")[0]
    r = cli("--json", "wait", bad["key"], good["key"], ok=False)
    assert r.code == 3 and "1 of 2 job(s) did not complete" in r.err
    assert [j["state"] for j in r.json()] == ["failed", "completed"]
    assert r.json()[0]["exit_code"] == 3
    slow = cli.json("submit", "--", "sleep 20")[0]
    t0 = time.monotonic()
    r = cli("wait", "--timeout", "0.5", slow["key"], ok=False)
    assert r.code == 124 and "still unfinished after 0.5 s" in r.err
    assert time.monotonic() - t0 < 15
    r = cli("--json", "cancel", slow["key"])
    assert r.json()[0]["state"] == "cancelled"


def test_logs_follow_prints_until_the_job_ends(cli):
    job = cli.json("submit", "--", "for i in 1 2 3; do echo line $i; sleep 0.4; done")[0]
    r = cli("logs", "--follow", job["key"], timeout=60)
    assert r.out == "line 1\nline 2\nline 3\n"
    assert cli.json("jobs")[0]["state"] == "completed"


def test_cancel_hold_release_by_key(cli):
    blocker = cli.json("submit", "--threads", CORES, "--name", "blocker", "--", "sleep 30")[0]
    queued = cli.json("submit", "--threads", CORES, "--name", "queued", "--", "echo ran")[0]
    assert blocker["state"] == "running" and queued["state"] == "pending"
    assert cli.json("hold", queued["key"])[0]["state"] == "held"
    assert cli.json("hold", queued["key"])[0]["state"] == "held"  # holding twice is fine
    line = cli.error("hold", blocker["key"])
    assert "cannot hold" in line and "running" in line and "not started" in line
    line = cli.error("release", blocker["key"])
    assert "cannot release" in line and "only a held job" in line
    assert cli.json("release", queued["key"])[0]["state"] == "pending"
    ended = cli.json("cancel", blocker["key"][:10], queued["key"])
    assert [j["state"] for j in ended] == ["cancelled", "cancelled"]
    assert ended[0]["job_id"] == blocker["job_id"]
    assert cli.json("cancel", queued["key"])[0]["state"] == "cancelled"  # again: no error
    assert cli.json("jobs", "--state", "active") == []


def test_a_released_local_job_starts_at_once_when_cores_are_free(cli):
    held = cli.json("submit", "--hold", "--", "sleep 5")[0]
    assert held["state"] == "held"
    released = cli.json("release", held["key"])[0]
    assert released["state"] == "running" and released["job_id"]


def test_edit_a_jobs_own_fields(cli):
    a = cli.json("submit", "--name", "prep", "--", "true")[0]
    b = cli.json("submit", "--", "echo b")[0]
    cli("wait", a["key"], b["key"])
    (edited,) = cli.json("edit", "prep", "--name", "prepare", "--comment", "first try")
    assert (edited["key"], edited["name"], edited["comment"]) == (a["key"], "prepare", "first try")
    both = cli.json("edit", a["key"], b["key"], "--tag", "sweep", "--tag", "v2")
    assert [j["tags"] for j in both] == [["sweep", "v2"], ["sweep", "v2"]]
    (b_now,) = cli.json("edit", b["key"], "--untag", "v2", "--user-state", "analysed")
    assert b_now["tags"] == ["sweep"] and b_now["user_state"] == "analysed"
    assert b_now["summary"] == "echo b" and b_now["state"] == "completed"  # not the user's
    assert [j["key"] for j in cli.json("jobs", "--match", "analysed")] == [b["key"]]
    line = cli.error("edit", a["key"], b["key"], "--name", "x", code=2)
    assert "--name gives one job a name" in line


def test_keys_prefixes_and_their_errors(cli):
    a = cli.json("submit", "--key", "run-a", "--", "true")[0]
    cli.json("submit", "--key", "run-b", "--", "true")
    assert cli.json("show", "run-a")["key"] == a["key"]
    line = cli.error("show", "run-")
    assert "'run-' names 2 jobs (run-a, run-b): give more of the key" in line
    line = cli.error("logs", "nosuchkey")
    assert "no job 'nosuchkey'" in line and "hpcexec jobs" in line
    line = cli.error("wait", "run-a", "nosuchkey")
    assert "no job 'nosuchkey'" in line
    line = cli.error("--cache-dir", str(cli.cwd / "empty"), "show", "run-a")
    assert "no job cache at" in line and "--cache-dir" in line


def test_a_unique_name_is_a_key_and_a_shared_one_says_which_jobs(cli):
    prep = cli.json("submit", "--name", "prep", "--", "echo prepared")[0]
    assert cli.json("show", "prep")["key"] == prep["key"]
    assert cli("wait", "prep").code == 0
    assert cli("logs", "prep").out == "prepared\n"
    twins = [cli.json("submit", "--name", "twin", "--", f"echo {i}")[0] for i in range(2)]
    line = cli.error("show", "twin")
    shown = ", ".join(sorted(t["key"][:12] for t in twins))
    assert "2 jobs are named 'twin' (" in line and "give one's key" in line
    assert all(t["key"][:12] in line for t in twins), (line, shown)
    assert "hpcexec jobs --match '^twin$'" in line


def test_show_says_why_a_job_that_could_not_load_its_payload_failed(cli, ex):
    f = ex.options(hold=True).submit(jobfns.double, 21)
    payload = Path(f.record.jobdir) / PAYLOAD
    payload.unlink()
    f.release()
    assert isinstance(f.exception(timeout=60), JobFailed)
    why = f"cannot load the payload {payload}: FileNotFoundError"
    shown = cli.json("--cache-dir", str(ex.cache_dir), "show", f.key)
    assert shown["state"] == "failed" and shown["reason"].startswith(why)
    assert why in cli("--cache-dir", str(ex.cache_dir), "show", f.key).out


def test_show_gives_a_python_jobs_exception_and_its_traceback(cli, ex):
    f = ex.submit(jobfns.fail, "the input was empty")
    assert isinstance(f.exception(timeout=60), ValueError)
    where = ("--cache-dir", str(ex.cache_dir))
    shown = cli.json(*where, "show", f.key)["exception"]
    assert shown["type"] == "ValueError" and shown["message"] == "the input was empty"
    assert "raise ValueError(msg)" in shown["traceback"] and "jobfns.py" in shown["traceback"]
    text = cli(*where, "show", f.key).out
    assert "exception  ValueError: the input was empty" in text
    assert text.split("traceback (in the job):\n")[1].startswith("Traceback (most recent call")
    r = cli(*where, "wait", f.key, ok=False)
    assert r.code == 3 and "a Python job's exception and traceback" in r.err
    custom = ex.submit(jobfns.raise_custom)
    custom.exception(timeout=60)
    shown = cli.json(*where, "show", custom.key)["exception"]
    assert shown["type"] == "jobfns.CustomError" and "custom detail" in shown["message"]
    assert cli.json(*where, "show", ex.submit(jobfns.double, 1).key)["exception"] is None


def test_errors_are_one_line_with_an_exit_status(cli):
    line = cli.error("--backend", "nosuch", "submit", "--", "true")
    assert "unknown backend 'nosuch'" in line and "slurm" in line
    line = cli.error("jobs", "--backend", "slurmm")
    assert "unknown backend 'slurmm'" in line
    line = cli.error("submit", "--mem", "lots", "--", "true")
    assert "bad value 'lots' for resource 'mem'" in line and "4GB" in line
    line = cli.error("submit", "--threads", "0", "--", "true")
    assert "resource 'threads'" in line
    line = cli.error("submit", "--env", "NOEQUALS", "--", "true", code=2)
    assert "--env takes NAME=VALUE" in line
    line = cli.error("submit", code=2)
    assert "submit needs a command after --" in line
    line = cli.error("jobs", "--state", "finishd", code=2)
    assert "unknown state 'finishd'" in line and "finished" in line
    line = cli.error("jobs", "--match", "(", code=2)
    assert "bad regular expression" in line
    line = cli.error("frobnicate", code=2)
    assert "invalid choice: 'frobnicate'" in line
    line = cli.error("clean", code=2)
    assert "give --finished" in line
    line = cli.error("clean", "--finished", "--older-than", "soon", code=2)
    assert "--older-than takes a number and a unit" in line
    line = cli.error("merge", str(cli.cwd), code=2)
    assert "merge needs --host" in line
    r = cli("--debug", "--backend", "nosuch", "submit", "--", "true", ok=False)
    assert "Traceback" in r.err and r.err.strip().endswith("'auto'")


def test_clean_and_merge(cli, tmp_path):
    other = tmp_path / "other"
    for n in ("1", "2"):
        cli("--cache-dir", str(other), "submit", "--key", f"theirs-{n}", "--", f"echo {n}")
    cli("--cache-dir", str(other), "wait", "theirs-1", "theirs-2")
    mine = cli.json("submit", "--", "echo mine")[0]
    cli("wait", mine["key"])
    merged = cli.json("merge", str(other), "--host", "cluster-a")
    assert merged == {"source": str(other), "host": "cluster-a", "taken": 2, "kept": 0}
    assert cli.json("merge", str(other / "jobs.sqlite"), "--host", "cluster-a")["kept"] == 2
    hosts = {j["key"]: j["host"] for j in cli.json("jobs", "--host", "cluster-a")}
    assert hosts == {"theirs-1": "cluster-a", "theirs-2": "cluster-a"}
    assert len(cli.json("jobs")) == 3
    assert len(cli.json("jobs", "--host", f"cluster-a,{socket.gethostname()}")) == 3
    line = cli.error("merge", str(tmp_path / "nothing"), "--host", "x")
    assert "no job cache at" in line

    assert cli.json("clean", "--finished", "--older-than", "1h")["removed"] == []
    dry = cli.json("clean", "--state", "completed", "--match", "theirs-1", "--dry-run")
    assert dry["removed"] == ["theirs-1"] and len(cli.json("jobs")) == 3
    jobdir = cli.cwd / ".hpcexec" / "jobs" / mine["key"]
    assert jobdir.is_dir()
    done = cli.json("clean", "--finished")
    assert sorted(done["removed"]) == sorted(["theirs-1", "theirs-2", mine["key"]])
    assert sorted(done["files_on_other_hosts"]) == ["theirs-1", "theirs-2"]
    assert cli.json("jobs") == [] and not jobdir.exists()
    assert (other / "jobs").is_dir()  # the other cache's files are left alone


def test_clean_counts_jobs_that_ended_while_nobody_looked(cli):
    job = cli.json("submit", "--", "sleep 0.5")[0]
    assert cli.json("jobs", "--no-refresh")[0]["state"] == "running"
    time.sleep(1.5)  # it ended; no client of the cache was there to see it
    assert cli.json("jobs", "--no-refresh")[0]["state"] == "running"
    assert cli.json("clean", "--finished", "--dry-run")["removed"] == [job["key"]]
    assert cli.json("clean", "--finished")["removed"] == [job["key"]]


def test_clean_keeps_what_unfinished_jobs_need_and_refuses_active_ones(cli):
    blocker = cli.json("submit", "--threads", CORES, "--", "sleep 30")[0]
    line = cli.error("clean", "--state", "running", code=2)
    assert "finished jobs only" in line and "hpcexec cancel" in line
    cli("cancel", blocker["key"])
    assert cli.json("clean", "--finished")["removed"] == [blocker["key"]]


def test_backends_says_what_is_here_and_what_auto_picks(cli):
    data = cli.json("backends")
    found = {b["backend"]: b["available"] for b in data["backends"]}
    assert found["local"] is True
    assert found["slurm"] == all(shutil.which(c) for c in ("sbatch", "squeue"))
    assert data["auto"] == detect_backend(shutil.which)
    assert f"backend 'auto' would use: {data['auto']}" in cli("backends").out


@pytest.mark.parametrize(
    "on_path, torque, auto",
    [
        (("qsub", "qstat"), None, "torque"),
        (("qsub", "qstat", "qacct", "qconf"), "qconf is on PATH", "sge"),  # Grid Engine's qsub
        (("qsub", "qstat", "pbs_rstat"), "pbs_rstat is on PATH", "pbspro"),
    ],
)
def test_torque_is_told_apart_from_the_schedulers_sharing_its_qsub(
    cli, tmp_path, on_path, torque, auto
):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in on_path:
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / name).chmod(0o755)
    data = cli.json("backends", PATH=str(bin_dir))
    rows = {b["backend"]: b for b in data["backends"]}
    assert rows["torque"]["available"] is (torque is None)
    assert data["auto"] == auto
    if torque:
        shown = cli("backends", PATH=str(bin_dir)).out
        line = next(x for x in shown.splitlines() if x.startswith("torque"))
        assert f"no ({torque}: qsub, qstat are another scheduler's)" in line


def test_help_and_version(cli):
    out = cli("--help").out
    for command in (
        "submit",
        "jobs",
        "show",
        "logs",
        "wait",
        "cancel",
        "hold",
        "release",
        "clean",
        "merge",
        "backends",
        "config",
    ):
        assert f"    {command} " in out
    assert cli("--version").out.startswith("hpcexec ")
    assert "--older-than" in cli("clean", "--help").out
    assert HPCEXEC.name == "hpcexec"


def test_outputs_relative_to_the_workdir_are_written_and_read_there(cli):
    (cli.cwd / "W").mkdir()
    job = cli.json(
        "submit",
        "--workdir",
        "W",
        "--stdout",
        "out.txt",
        "--stderr",
        "err.txt",
        "--",
        "echo to out; echo to err >&2",
    )[0]
    cli("wait", job["key"])
    work = cli.cwd / "W"
    assert (work / "out.txt").read_text() == "to out\n"
    assert (work / "err.txt").read_text() == "to err\n"
    assert not (cli.cwd / "out.txt").exists()
    assert cli("logs", job["key"]).out == "to out\n"
    assert cli("logs", "--stderr", job["key"]).out == "to err\n"
    shown = cli.json("show", job["key"])
    assert (shown["stdout_path"], shown["stderr_path"]) == (f"{work}/out.txt", f"{work}/err.txt")
    refused = cli("submit", "--workdir", "nowhere", "--", "true", ok=False)
    assert f"{cli.cwd}/nowhere does not exist" in refused.err


def test_report_shows_waits_use_and_advice(cli):
    """hpcexec report on local jobs: the runner's CPU time and memory against what was asked,
    one line of advice per name that asked far more than it used."""
    body = "python3 -c 'x = bytearray(30_000_000); sum(range(3_000_000))'"
    for i in range(2):
        cli("submit", "--name", "sweep", "--mem", "4GB", "--time", "2:00:00", "--", f"{body} # {i}")
    keys = [j["key"] for j in cli.json("jobs")]
    cli("wait", *keys)
    data = cli.json("report", "--match", "sweep")
    assert [j["name"] for j in data["jobs"]] == ["sweep", "sweep"]
    for j in data["jobs"]:
        assert j["state"] == "completed" and j["ran"] > 0 and j["waited"] >= 0
        assert j["mem_asked_mb"] == 4096 and j["time_limit"] == 7200
        assert j["cpu_seconds"] > 0  # a shell job: measured by its script (bash's times)
    assert data["summary"]["jobs"] == 2
    assert any(t.startswith("sweep (2 jobs): time limit 02:00:00") for t in data["advice"])
    text = cli("report", keys[0]).out
    assert text.splitlines()[0].split()[:3] == ["KEY", "NAME", "STATE"]
    assert "1 jobs; median wait" in text and "advice:" in text
    assert "give KEYs, or --match/--state" in cli.error("report", keys[0], "--match", "x", code=2)
