"""Executor.submit_file: a job script the user already has, as a tracked job (local backend;
the live schedulers' share is in tests/backends/test_live_scripts.py)."""

from __future__ import annotations

import sys

import pytest

from hpcexec import JobFailed, ResourceError, ShellResult
from hpcexec.executor import file_directives, file_interpreter


def test_directives_and_interpreter_of_a_file():
    text = (
        "#!/usr/bin/env python3\n#SBATCH --time=5\n\n# a comment\n#$ -N x\n#PBS -l nodes=1\n"
        "#BSUB -J y\n#not a directive\nprint(1)\n#SBATCH --late=ignored\n"
    )
    assert file_directives(text) == ("#SBATCH --time=5", "#$ -N x", "#PBS -l nodes=1", "#BSUB -J y")
    assert file_interpreter(text) == "/usr/bin/env python3"
    assert file_interpreter("echo hi\n") == "/bin/bash"
    assert file_directives("echo hi\n#SBATCH --x\n") == ()


def test_a_file_runs_with_its_interpreter_and_is_cached(ex, tmp_path):
    counter = tmp_path / "runs"
    path = tmp_path / "job.sh"  # hpcexec's own script name: the copy is renamed
    path.write_text(
        f"#!{sys.executable}\n#SBATCH --time=5\nimport os, sys\n"
        f"open({str(counter)!r}, 'a').write('run\\n')\n"
        f"print('python in', os.getcwd())\nsys.exit(0)\n"
    )
    f = ex.submit_file(path, workdir=str(tmp_path))
    assert f.result(timeout=30) == ShellResult(0, f"python in {tmp_path}\n", "")
    assert (f.record.path / "user_job.sh").read_text() == path.read_text()
    assert f.record.resources["file_directives"] == ["#SBATCH --time=5"]
    assert f.record.name == "job"
    again = ex.submit_file(path, workdir=str(tmp_path))
    assert again.key == f.key and again.result(timeout=30).returncode == 0
    assert counter.read_text() == "run\n"  # not submitted twice
    assert ex.file_script(path, workdir=str(tmp_path)) == (f.record.path / "job.sh").read_text()


def test_a_failing_file_fails_like_a_shell_job(ex, tmp_path):
    path = tmp_path / "fails.sh"
    path.write_text("echo partial; echo bad >&2; exit 3\n")
    with pytest.raises(JobFailed, match="exited with code 3") as info:
        ex.submit_file(path).result(timeout=30)
    assert info.value.exit_code == 3 and "bad" in str(info.value)
    assert ex.submit_file(path, check=False).result(timeout=30) == ShellResult(
        3, "partial\n", "bad\n"
    )


def test_unreadable_files_are_refused(ex, tmp_path):
    with pytest.raises(ResourceError, match="cannot read the job file"):
        ex.submit_file(tmp_path / "missing.sh")
    (tmp_path / "empty.sh").write_text("  \n")
    with pytest.raises(ResourceError, match="empty"):
        ex.submit_file(tmp_path / "empty.sh")
    assert ex.store.select() == []
