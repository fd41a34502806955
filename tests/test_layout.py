"""Every path of a job (hpcexec.layout)."""

from __future__ import annotations

import errno

import pytest

from hpcexec.layout import JobLayout, cannot_start, place


def test_outputs_are_resolved_against_the_workdir_else_kept_in_the_job_directory():
    lay = JobLayout.of("/c/jobs/k", {"workdir": "/w", "stdout": "o.txt", "stderr": "/abs/e"})
    assert (lay.stdout, lay.stderr, lay.stderr_target) == ("/w/o.txt", "/abs/e", "/abs/e")
    assert (lay.result, lay.exitcode, lay.script) == (
        "/c/jobs/k/result.pkl",
        "/c/jobs/k/exitcode",
        "/c/jobs/k/job.sh",
    )
    plain = JobLayout.of("/c/jobs/k", {})
    assert (plain.workdir, plain.stdout, plain.stderr) == (
        "/c/jobs/k",
        "/c/jobs/k/stdout",
        "/c/jobs/k/stderr",
    )
    joined = JobLayout.of("/j", {"workdir": "/w", "stdout": "o", "join_output": True})
    assert (joined.stderr, joined.stderr_target, joined.output("stderr", joined=True)) == (
        "/j/stderr",
        "/w/o",
        "/w/o",
    )


def test_place_makes_the_workdir_absolute_and_expands_home_where_the_job_runs():
    def home(p):
        return "/home/u" + p[1:] if p.startswith("~") else p

    got = place(
        {"workdir": "run/./a", "stdout": "~/o", "stderr": "e"},
        base="/here",
        expand=home,
        local=True,
    )
    assert got == {"workdir": "/here/run/a", "stdout": "/home/u/o", "stderr": "e"}
    assert place({}, base="/here", expand=home, local=True) == {"workdir": "/here"}
    remote = place({"workdir": "~/w"}, base="/r/.hpcexec", expand=home, local=False)
    assert remote == {"workdir": "/home/u/w"}


def test_check_start_names_the_path_that_keeps_a_job_from_starting(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "file").write_text("")
    cases = [
        ({"workdir": str(tmp_path / "gone")}, tmp_path / "gone", errno.ENOENT),
        ({"workdir": str(tmp_path / "file")}, tmp_path / "file", errno.ENOTDIR),
        ({"workdir": str(tmp_path), "stdout": "no/o"}, tmp_path / "no" / "o", errno.ENOENT),
        ({"workdir": str(tmp_path), "stderr": "sub"}, tmp_path / "sub", errno.EISDIR),
    ]
    for res, path, code in cases:
        with pytest.raises(OSError) as e:
            JobLayout.of(str(tmp_path), res).check_start()
        assert (e.value.filename, e.value.errno) == (str(path), code)
        assert cannot_start(e.value) == f"cannot start: {path}: {e.value.strerror}"
    fine = JobLayout.of(str(tmp_path), {"workdir": str(tmp_path), "stdout": "o"})
    fine.check_start()  # looks only: the start itself makes the files
    assert not (tmp_path / "o").exists() and not (tmp_path / "stderr").exists()
