"""Prologue, epilogue, auxiliary scripts, job_script and submit_file on each live scheduler
(SLURM, Grid Engine, SLURM over SSH: the ``live`` fixture of conftest.py)."""

from __future__ import annotations

import os

from hpcexec import ShellResult


def _read(ex, path: str) -> str:
    return ex.session.transport.read_bytes(path).decode()


def test_scripts_around_a_job_and_job_script_is_what_was_submitted(live, tmp_path):
    ex, _spec = live
    log = tmp_path / "log"  # on this machine: prologue and epilogue run here, even over SSH
    body = "bash {jobdir}/helper.sh"
    opts = dict(
        name="around",
        prologue=f"echo prologue {{name}} >> {log}",
        epilogue=f"echo epilogue $HPCEXEC_JOB_STATE $HPCEXEC_JOB_ID >> {log}",
        aux_scripts={"helper.sh": "echo helper {name} on $HPCEXEC_NODELIST"},
    )
    shown = ex.job_script(body, **opts)
    assert ex.store.select() == []  # nothing written, nothing submitted
    f = ex.options(**opts).submit_shell(body)
    r = f.result(timeout=180)
    assert r.returncode == 0 and r.stdout.startswith("helper around on ")
    assert log.read_text().splitlines() == ["prologue around", f"epilogue completed {f.job_id}"]
    assert f.record.epilogue_state == "done"
    jobdir = f.record.jobdir
    assert _read(ex, os.path.join(jobdir, "submit.sh")) == shown  # exactly what was submitted
    assert _read(ex, os.path.join(jobdir, "epilogue.log")).startswith("exit code 0\n")


def test_submit_file_keeps_its_directives_and_resources_win(live, tmp_path):
    ex, spec = live
    path = tmp_path / "mine.sh"
    path.write_text(
        "#!/bin/bash\n#SBATCH --job-name=fromfile\n#SBATCH --comment=kept\n"
        "#$ -N fromfile\n#$ -ac kept=yes\n"
        "echo name=${SLURM_JOB_NAME:-$JOB_NAME}\nexit 4\n"
    )
    f = ex.submit_file(path, name="given", check=False)
    assert f.result(timeout=180) == ShellResult(4, "name=given\n", "")
    submitted = _read(ex, os.path.join(f.record.jobdir, "submit.sh"))
    assert submitted == ex.file_script(path, name="given")
    assert submitted.index("fromfile") < submitted.index("given")  # ours come later and win
    if spec["submit"] == "sbatch":
        out = ex.session.transport.run(["scontrol", "show", "job", f.job_id]).stdout
        assert "Comment=kept" in out  # the file's directive was kept


def test_a_body_line_that_looks_like_a_directive_is_not_one(live):
    # Grid Engine reads "#$" lines anywhere in a script: such a body runs from its own file.
    ex, spec = live
    body = "cat <<'EOF'\n#$ -N hijacked\n#SBATCH --job-name=hijacked\nEOF\necho ${SLURM_JOB_NAME:-$JOB_NAME}"
    shown = ex.job_script(body, name="mine")
    f = ex.options(name="mine").submit_shell(body)
    r = f.result(timeout=180)
    assert r.stdout == "#$ -N hijacked\n#SBATCH --job-name=hijacked\nmine\n"
    assert _read(ex, os.path.join(f.record.jobdir, "submit.sh")) == shown
    assert ("exec /bin/bash" in shown) == (spec["submit"] == "qsub")
