from __future__ import annotations

import time

import pytest


@pytest.fixture(params=["local", pytest.param("slurm", marks=pytest.mark.slurm)])
def anyex(request):
    """The local executor, then the live SLURM one (marked slurm)."""
    return request.getfixturevalue("ex" if request.param == "local" else "sex")


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something true; fail saying ``what`` otherwise."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"{what} not within {timeout} s")
        time.sleep(interval)
