"""A scheduler's limit on queued jobs and ``max_queued`` against the fake PBS Pro
(tests/fakesched/): a refusal at the limit leaves the jobs waiting and they are submitted as
jobs end; never more jobs queued than allowed; the wait logged once, the reason on the records."""

from __future__ import annotations

import itertools
import logging
import shutil
import subprocess
import sys
import threading

import jobfns
import pytest
from test_fake_schedulers import COMMANDS, FAKE, TOOLS

import hpcexec
from hpcexec.backends import SCHEDULERS


@pytest.fixture
def pbs(tmp_path, monkeypatch):
    """The fake PBS Pro alone on PATH; its state under tmp_path/sched."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in COMMANDS["pbspro"]:
        (bin_dir / command).symlink_to(FAKE / command)
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "python3").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKESCHED_DIR", str(tmp_path / "sched"))
    monkeypatch.setenv("FAKESCHED_FLAVOR", "pbspro")
    monkeypatch.setattr(SCHEDULERS["pbspro"], "poll_max", 0.3)
    yield tmp_path / "sched" / "fakesched"
    subprocess.run([sys.executable, str(FAKE / "_fakesched.py"), "cleanup"], check=False)


def reasons_while(ex, futures) -> set[str]:
    """Every reason the map's records showed while it ran (sampled from a thread)."""
    seen: set[str] = set()
    stop = threading.Event()

    def sample():
        while not stop.wait(0.05):
            seen.update(r.reason or "" for r in ex.session.store.query("1"))

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        assert [f.result(timeout=120) for f in futures] == list(range(len(futures)))
    finally:
        stop.set()
        t.join()
    return seen


def test_a_refusal_at_the_queued_jobs_limit_waits_and_all_complete(
    pbs, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("FAKESCHED_MAX_QUEUED", "4")
    caplog.set_level(logging.INFO, logger="hpcexec.schedqueue")
    ex = hpcexec.Executor(backend="pbspro", cache_dir=tmp_path / "cache", poll_interval=0.1)
    try:
        futures = [ex.submit(jobfns.sleep_then, 0.3, i) for i in range(12)]
        seen = reasons_while(ex, futures)
    finally:
        ex.shutdown()
    assert int((pbs / "peak").read_text()) <= 4
    limit = "would exceed queue generic's per-user limit of jobs in 'Q' state"
    assert any(r.startswith(f"waiting: the scheduler's submit limit ({limit})") for r in seen)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors
    throttled = [r.getMessage() for r in caplog.records if "throttled: " in r.getMessage()]
    assert throttled, "the wait at the limit was never logged"
    # logged when the state changes, never twice in a row for one state (it waited many polls)
    assert all(a != b for a, b in itertools.pairwise(throttled)), throttled


def test_max_queued_keeps_at_most_that_many_in_the_queue(pbs, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="hpcexec.schedqueue")
    ex = hpcexec.Executor(
        backend="pbspro", cache_dir=tmp_path / "cache", poll_interval=0.1, max_queued=3
    )
    try:
        futures = [ex.submit(jobfns.sleep_then, 0.2, i) for i in range(10)]
        seen = reasons_while(ex, futures)
    finally:
        ex.shutdown()
    assert int((pbs / "peak").read_text()) <= 3
    assert "waiting: max_queued=3" in seen
    lines = [r.getMessage() for r in caplog.records]
    assert [m for m in lines if m.startswith("throttled: ")] == [
        next(m for m in lines if m.startswith("throttled: "))
    ]  # logged once, however many polls it waited
    assert "waiting: max_queued=3" in next(m for m in lines if m.startswith("throttled: "))
