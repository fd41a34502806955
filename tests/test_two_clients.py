"""Two processes on one cache: nothing lost, nothing run twice, cores shared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import hpcexec

HERE = Path(__file__).parent

CLIENT = """
import sys, hpcexec, jobfns
cache, counter, first, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
with hpcexec.Executor(cache_dir=cache, poll_interval=0.02) as ex:
    fs = [ex.submit(jobfns.count_run, counter, i) for i in range(first, first + n)]
    values = [f.result() for f in fs]
open(out, "w").write(" ".join(map(str, values)))
"""

INTERVALS = """
import sys, hpcexec, jobfns
cache, log, tag = sys.argv[1], sys.argv[2], sys.argv[3]
with hpcexec.Executor(cache_dir=cache, poll_interval=0.02) as ex:
    offset = 0.0 if tag == "a" else 0.0005  # different work, so the cache keys differ
    fs = [ex.submit(jobfns.record_interval, log, 0.3 + i / 1000 + offset) for i in range(4)]
    [f.result() for f in fs]
"""


def _spawn(tmp_path, code, *args):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_submitting_different_work_lose_nothing(tmp_path):
    cache, counter = tmp_path / "cache", tmp_path / "counter"
    n = 40
    procs = [
        _spawn(tmp_path, CLIENT, cache, counter, first, n, tmp_path / f"out{first}")
        for first in (0, 1000)
    ]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    assert len(hpcexec.Store(cache).select(state="completed")) == 2 * n
    assert sorted(map(int, counter.read_text().split())) == list(range(n)) + list(
        range(1000, 1000 + n)
    )
    assert (tmp_path / "out0").read_text().split() == [str(i * 10) for i in range(n)]


def test_two_processes_submitting_the_same_work_run_it_once(tmp_path):
    cache, counter = tmp_path / "cache", tmp_path / "counter"
    n = 30
    procs = [_spawn(tmp_path, CLIENT, cache, counter, 0, n, tmp_path / f"out{k}") for k in (1, 2)]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    assert sorted(map(int, counter.read_text().split())) == list(range(n))
    expected = [str(i * 10) for i in range(n)]
    assert (tmp_path / "out1").read_text().split() == expected
    assert (tmp_path / "out2").read_text().split() == expected


def test_two_processes_never_use_more_cores_than_the_machine_has(tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "intervals"
    procs = [_spawn(tmp_path, INTERVALS, cache, log, tag) for tag in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    intervals = [tuple(map(float, line.split())) for line in log.read_text().splitlines()]
    assert len(intervals) == 8
    events = sorted([(t0, 1) for t0, _ in intervals] + [(t1, -1) for _, t1 in intervals])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    cores = hpcexec.Executor(cache_dir=cache).session.backend.total_cores
    assert 0 < peak <= cores, (peak, cores)
