"""Helpers for tests on live daemons, importable by any test module (a module named
``conftest`` is not: pytest loads several)."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import time
from pathlib import Path

import pytest

import hpcexec
from hpcexec import JobState
from hpcexec.layout import STARTED

CLUSTERS = Path(__file__).parent / "clusters"


def _executor(backend: str, cache: Path, **kw):
    """An executor on a fresh cache that ends every job it started when the test ends."""
    executor = hpcexec.Executor(
        backend, cache_dir=cache, poll_interval=0.02 if backend == "local" else 0.2, **kw
    )
    yield executor
    for f in executor.session.futures():
        if not f.done():
            f.terminate()
    _done, not_done = concurrent.futures.wait(executor.session.futures(), timeout=60)
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


PYENV_LOCK_MAX_AGE = 90.0  # seconds; pyenv's own rehash gives up waiting after 60


def heal_stale_pyenv_lock() -> None:
    """Remove pyenv's rehash lock when no rehash holds it any more.

    On these machines root's shell rc files run ``pyenv rehash``, which takes the lock file
    ``$PYENV_ROOT/shims/.pyenv-shim``; a shell killed inside it (a test cutting an SSH session,
    a job cancelled while its shell starts) leaves the lock behind, and every later shell
    (each SSH command, each login-shell job) then waits 60 s for it. Nothing of hpcexec's."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    lock = Path(root) / "shims" / ".pyenv-shim"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age < PYENV_LOCK_MAX_AGE:
        return
    busy = subprocess.run(["pgrep", "-f", "pyenv-rehash"], capture_output=True).returncode == 0
    if not busy:
        lock.unlink(missing_ok=True)


def running(f, timeout=60):
    """Running, and past the start of its script (the started file is written)."""
    deadline = time.monotonic() + timeout
    while f.state is not JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f.state is JobState.RUNNING
    started = os.path.join(f.record.jobdir, STARTED)
    while not os.path.exists(started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert os.path.exists(started)
