"""Fixtures for the live Grid Engine tests (the SLURM ones live in tests/conftest.py)."""
from __future__ import annotations

import concurrent.futures
import os
import subprocess
from pathlib import Path

import pytest

import hpcexec

CLUSTERS = Path(__file__).parent.parent / "clusters"


def _live(name: str) -> None:
    """Fail under CI when a daemon that tests/run.sh starts is not running; skip elsewhere.
    (The same rule as tests/conftest.py's ``_live``: that module cannot be imported from here,
    both being named ``conftest``.)"""
    script = CLUSTERS / f"{name}.sh"
    ok = subprocess.run(["bash", str(script), "status"], capture_output=True).returncode == 0
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not running: start it with `bash {script} start`")
    pytest.skip(f"no live {name} here: start it (as root) with `bash {script} start`")


@pytest.fixture(scope="session")
def sge_cluster():
    _live("sge")


@pytest.fixture
def gex(sge_cluster, cache):
    """A Grid Engine executor on a fresh cache, polling fast."""
    executor = hpcexec.Executor("sge", cache_dir=cache, poll_interval=0.2, time="0:10:00")
    yield executor
    for f in executor._core.all_futures():
        if not f.done():
            f.terminate()
    done, not_done = concurrent.futures.wait(executor._core.all_futures(), timeout=60)
    executor.shutdown(wait=not not_done)
    assert not not_done, f"futures still pending after the test: {not_done}"
