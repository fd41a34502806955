"""Every example in examples/ runs as written: here on the local backend, on the live SLURM,
and through the loopback sshd. Each says what to install, and one run in a clone leaves
nothing there that git would list as untracked."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sshtest import DEST, KEY, KNOWN

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
#: where each example is run by a test below (a new example needs a line here)
COVERED = {
    "quickstart.py": "local",
    "sweep_slurm.py": "slurm",
    "shell_pipeline.py": "both",
    "remote_ssh.py": "ssh",
    "resume_after_crash.py": "local",
    "joblib_sklearn.py": "local",
    "dask_cluster.py": "local",
}


def run(example: str, *args: str, cwd: Path, timeout: float = 300) -> str:
    """Run an example as a user would (its own working directory, no profile)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCEXEC_")}
    env["XDG_CONFIG_HOME"] = str(cwd / "xdg")
    p = subprocess.run(
        [sys.executable, str(EXAMPLES / example), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert p.returncode == 0, f"{example} {' '.join(args)} exited {p.returncode}:\n{p.stderr}"
    return p.stdout


def needs(example: str) -> None:
    """Examples another issue adds may not be here yet."""
    if not (EXAMPLES / example).exists():
        pytest.skip(f"examples/{example} is not in this tree")


def clone(tmp_path: Path) -> Path:
    """An empty git work tree with this repository's .gitignore: an example run there as from
    the clone must leave nothing that ``git status`` lists (its work directories ignored or
    temporary)."""
    if shutil.which("git") is None or not (REPO / ".gitignore").exists():
        pytest.skip("needs git and the clone's .gitignore")
    where = tmp_path / "clone"
    subprocess.run(["git", "init", "-q", str(where)], check=True)
    shutil.copy(REPO / ".gitignore", where / ".gitignore")
    # what the test itself puts there: run()'s configuration directory, the copied .gitignore
    (where / ".git" / "info").mkdir(exist_ok=True)
    (where / ".git" / "info" / "exclude").write_text("/xdg/\n/.gitignore\n")
    return where


def untracked(where: Path) -> list[str]:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=where,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()


def test_every_example_is_run_by_a_test():
    assert {p.name for p in EXAMPLES.glob("*.py")} <= set(COVERED)


#: what an example's docstring must ask to install when it imports these modules
INSTALLS = {
    "joblib": "'.[joblib]'",
    "sklearn": "scikit-learn",
    "dask": "'.[dask]'",
    "distributed": "'.[dask]'",
    "numpy": "numpy",
}


@pytest.mark.parametrize("example", sorted(COVERED))
def test_every_example_says_what_to_install(example):
    needs(example)
    tree = ast.parse((EXAMPLES / example).read_text())
    doc = ast.get_docstring(tree) or ""
    m = re.search(r"Needs ``(pip install [^`]+)``", doc)
    assert m, f"examples/{example}: its docstring should say what to pip install"
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    missing = [want for mod, want in INSTALLS.items() if mod in imported and want not in m[1]]
    assert missing == [], f"examples/{example}: {m[1]!r} lacks {missing}"


def test_quickstart_twice(tmp_path):
    here = clone(tmp_path)
    first = run("quickstart.py", cwd=here)
    assert "sum of the first 100 squares: 328350" in first
    assert "hello from job hello" in first
    ids = re.findall(r"= [\d.]+   job (\S+)", first)
    assert len(ids) == 6
    assert "run it again and the results come from" in first
    second = run("quickstart.py", cwd=here)  # from the cache: the same jobs
    assert re.findall(r"= [\d.]+   job (\S+)", second) == ids
    assert re.search(r"done in [\d.]+ s: 7 of 7 jobs came from the cache in ", second)
    assert untracked(here) == []


def test_shell_pipeline_local(tmp_path):
    here = clone(tmp_path)
    out = run("shell_pipeline.py", cwd=here)
    assert "preparing with 2 threads" in out
    assert "sum of 1..3000 by three parts: 4501500 (expected 4501500)" in out
    out = run("shell_pipeline.py", "--fail", cwd=here)
    assert re.search(r"merge did not run: cancelled, dependency \w+ ended failed", out)
    assert untracked(here) == []


def test_resume_after_crash(tmp_path):
    here = clone(tmp_path)
    out = run("resume_after_crash.py", cwd=here)
    assert re.search(r"first run: submitted 4 jobs, [1-4] had started, then it was killed", out)
    assert "second run: [0, 1, 4, 9]" in out
    assert "jobs found in the cache: 4 of 4; started again: 0" in out
    assert untracked(here) == []


def test_sweep_on_the_local_backend(tmp_path):
    here = clone(tmp_path)
    out = run("sweep_slurm.py", "--backend", "local", cwd=here)
    assert "lowest energy at alpha=0.2, mode=3; 12 points" in out
    assert untracked(here) == []


def test_joblib_sklearn(tmp_path):
    needs("joblib_sklearn.py")
    here = clone(tmp_path)
    out = run("joblib_sklearn.py", cwd=here)
    assert re.search(r"best \{.*'C'.*\}, score 0\.\d+", out)
    assert untracked(here) == []


def test_dask_cluster(tmp_path):
    needs("dask_cluster.py")
    here = clone(tmp_path)
    out = run("dask_cluster.py", cwd=here)
    assert re.search(r"mean of 16M random numbers: 0\.5\d*", out)
    assert untracked(here) == []


@pytest.mark.slurm
def test_sweep_and_pipeline_on_slurm(slurm_cluster, tmp_path):
    out = run("sweep_slurm.py", "--limit", "4", cwd=tmp_path)
    m = re.search(
        r"lowest energy at alpha=0.2, mode=3; 12 points in .* slurm job\(s\) (\d+)$", out.strip()
    )
    assert m, out
    script = next((tmp_path / ".hpcexec" / "arrays").glob("*/submit.sh")).read_text()
    assert "#SBATCH --array=0-11%4" in script
    out = run("shell_pipeline.py", "--backend", "slurm", cwd=tmp_path)
    assert "sum of 1..3000 by three parts: 4501500" in out
    assert re.search(r"part0=(\d+)_0, part1=\1_1, part2=\1_2", out)  # one array


@pytest.mark.slurm
@pytest.mark.ssh
def test_remote_ssh(slurm_cluster, sshd, tmp_path):
    out = run(
        "remote_ssh.py",
        DEST,
        "--backend",
        "slurm",
        "--ssh-key",
        str(KEY),
        "--known-hosts",
        str(KNOWN),
        "--python",
        sys.executable,
        "--remote-dir",
        str(tmp_path / "remote dir"),
        cwd=tmp_path,
    )
    assert len(re.findall(rf"ran as job \d+\S* +on \S+ .* in {tmp_path / 'remote dir'}", out)) == 4
    assert re.search(r"^shell job \d+ on ", out, re.M)
    assert f"name the host '{DEST}'" in out
