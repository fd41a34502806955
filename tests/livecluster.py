"""Helpers for tests on live daemons, importable by any test module (a module named
``conftest`` is not: pytest loads several)."""
from __future__ import annotations

import concurrent.futures
import os
import subprocess
from pathlib import Path

import pytest

import hpcexec

CLUSTERS = Path(__file__).parent / "clusters"


def _executor(backend: str, cache: Path, **kw):
    """An executor on a fresh cache that ends every job it started when the test ends."""
    executor = hpcexec.Executor(backend, cache_dir=cache, poll_interval=0.02 if backend == "local"
                                else 0.2, **kw)
    yield executor
    for f in executor._core.all_futures():
        if not f.done():
            f.terminate()
    done, not_done = concurrent.futures.wait(executor._core.all_futures(), timeout=60)
    executor.shutdown(wait=not not_done)
    assert not not_done, f"futures still pending after the test: {not_done}"


def _live(name: str) -> None:
    """Fail under CI when a daemon that tests/run.sh starts is not running; skip elsewhere."""
    script = CLUSTERS / f"{name}.sh"
    ok = subprocess.run(["bash", str(script), "status"], capture_output=True).returncode == 0
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not running: tests/run.sh starts it with `bash {script} start`")
    pytest.skip(f"no live {name} here: start it (as root) with `bash {script} start`")
