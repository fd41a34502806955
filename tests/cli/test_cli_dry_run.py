"""hpcexec submit --dry-run, --file, --prologue, --epilogue and --aux-script."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def test_dry_run_prints_the_script_then_submit_writes_it(cli):
    args = ("submit", "--threads", "2", "--name", "dry", "--", "echo {threads} {name}")
    shown = cli(*args[:1], "--dry-run", *args[1:]).out
    assert not (cli.cwd / ".hpcexec" / "jobs").exists() or not any(
        (cli.cwd / ".hpcexec" / "jobs").iterdir()
    )
    assert "echo 2 dry" in shown and shown.startswith("#!/bin/bash\n")
    job = cli.json(*args)[0]
    assert (Path(job["jobdir"]) / "job.sh").read_text() == shown
    assert cli.json("submit", "--dry-run", "--", "true")["script"].startswith("#!/bin/bash")


def test_a_dry_run_renders_what_this_machine_could_not_run(cli):
    """The docs' `--dry-run --threads 4` (docs/cli.md) on a 2-core machine: a dry run renders the
    script; only submitting refuses a job that could never start here."""
    many = str(len(os.sched_getaffinity(0)) + 2)
    shown = cli("submit", "--dry-run", "--threads", many, "--", "make -j {threads}").out
    assert f"make -j {many}" in shown
    line = cli.error("submit", "--threads", many, "--", "make -j {threads}")
    assert f"asks for {many} cores" in line and "could never start" in line
    assert cli.json("jobs") == []  # nothing written


def test_submit_a_file_with_scripts_around_it(cli, tmp_path):
    (tmp_path / "mine.sh").write_text(
        "#!/bin/bash\n#SBATCH --time=5\nbash $1 2>/dev/null; echo file ran; exit 2\n"
    )
    (tmp_path / "helper.txt").write_text("threads={threads}\n")
    log = tmp_path / "log"
    shown = cli("submit", "--dry-run", "--file", str(tmp_path / "mine.sh")).out
    assert "mine.sh" in shown
    job = cli.json(
        "submit",
        "--file",
        str(tmp_path / "mine.sh"),
        "--threads",
        "1",
        "--prologue",
        f"echo before >> {log}",
        "--epilogue",
        f"echo after >> {log}",
        "--aux-script",
        f"notes.txt={tmp_path / 'helper.txt'}",
    )[0]
    assert (Path(job["jobdir"]) / "notes.txt").read_text() == "threads=1\n"
    done = cli.json("wait", job["key"], ok=None)
    assert [(j["state"], j["exit_code"]) for j in done] == [("failed", 2)]
    assert cli("logs", job["key"]).out == "file ran\n"
    assert log.read_text() == "before\nafter\n"  # the epilogue ran in `hpcexec wait`
    assert cli.json("show", job["key"])["epilogue_state"] == "done"


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("--prologue", "echo no >&2; exit 9", "--", "true"),
            "exited with code 9: no; nothing was submitted",
        ),
        (("--file", "/nonexistent/x.sh"), "cannot read the job file"),
        (("--aux-script", "noequals", "--", "true"), "--aux-script takes NAME=PATH"),
    ],
)
def test_submit_errors(cli, args, message):
    line = cli("submit", *args, ok=False).err
    assert message in line


def test_file_and_command_together_are_refused(cli, tmp_path):
    line = cli.error("submit", "--file", str(tmp_path / "x"), "--", "true", code=2)
    assert "either --file PATH or a command" in line


@pytest.mark.slurm
def test_slurm_dry_run_is_what_sbatch_gets(slurm_cluster, cli):
    args = (
        "--backend",
        "slurm",
        "submit",
        "--time",
        "0:05:00",
        "--name",
        "dry",
        "--",
        "echo on $HPCEXEC_NODELIST",
    )
    shown = cli(*args[:3], "--dry-run", *args[3:]).out
    assert "#SBATCH --time=00:05:00" in shown and "#SBATCH --job-name=dry" in shown
    job = cli.json(*args)[0]
    assert (Path(job["jobdir"]) / "submit.sh").read_text() == shown
    cli("wait", job["key"])


def test_drmaa_options_on_the_command_line(cli, tmp_path):
    shown = cli(
        "--backend",
        "slurm",
        "submit",
        "--dry-run",
        "--join-output",
        "--stdin",
        "in.txt",
        "--mail",
        "me@example.org:begin,fail",
        "--begin",
        "2030-01-02T03:04:05",
        "--deadline",
        "2030-01-03T00:00:00",
        "--",
        "cat",
    ).out
    for line in (
        "#SBATCH --mail-user=me@example.org",
        "#SBATCH --mail-type=BEGIN,FAIL",
        "#SBATCH --begin=",
        "#SBATCH --deadline=",
        "#SBATCH --input=",
    ):
        assert line in shown, line
    assert "#SBATCH --error" not in shown  # joined into --output
    (cli.cwd / "in.txt").write_text("fed\n")
    job = cli.json("submit", "--join-output", "--stdin", "in.txt", "--", "cat; echo to-stderr >&2")[
        0
    ]
    assert cli("wait", job["key"]).code == 0
    assert cli("logs", job["key"]).out == "fed\nto-stderr\n"
    assert "for resource 'mail'" in cli.error("submit", "--mail", "not an address", "--", "true")
    assert not cli.json("jobs")[1:]  # only the one job above was submitted
