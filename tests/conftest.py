from __future__ import annotations

import concurrent.futures

import pytest

import hpcexec


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def ex(cache):
    """A local executor on a fresh cache; ends every job it started when the test ends."""
    executor = hpcexec.Executor(cache_dir=cache, poll_interval=0.02)
    yield executor
    for f in executor._core.all_futures():
        if not f.done():
            f.terminate()
    done, not_done = concurrent.futures.wait(executor._core.all_futures(), timeout=30)
    executor.shutdown(wait=not not_done)
    assert not not_done, f"futures still pending after the test: {not_done}"
