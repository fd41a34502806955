"""A workflow whose client is SIGKILLed halfway, then run again: every task runs once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent

WORKFLOW = """
import sys, hpcexec, jobfns
counter, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with hpcexec.Executor(cache_dir=sys.argv[4], poll_interval=0.02) as ex:
    singles = [ex.submit(jobfns.count_run, counter, i, 0.2) for i in range(n)]
    mapped = list(ex.map(jobfns.count_run, [counter] * n, range(100, 100 + n), [0.1] * n,
                         chunksize=2))
    results = [f.result() for f in singles] + mapped
with open(out, "w") as f:
    f.write(" ".join(map(str, results)))
"""


def _run(tmp_path: Path, n: int, *, kill_after_lines: int | None = None) -> subprocess.Popen:
    script = tmp_path / "workflow.py"
    script.write_text(WORKFLOW)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, str(script), str(tmp_path / "counter"), str(tmp_path / "out"), str(n),
            str(tmp_path / "cache")]
    return subprocess.Popen(args, env=env, cwd=tmp_path)


def test_sigkilled_client_then_rerun_runs_every_task_once(tmp_path):
    n = 10
    counter = tmp_path / "counter"
    proc = _run(tmp_path, n)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if counter.exists() and len(counter.read_text().split()) >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ran_before = counter.read_text().split()
    assert 3 <= len(ran_before) < 2 * n, "the client should die halfway through"
    assert not (tmp_path / "out").exists()

    proc = _run(tmp_path, n)
    assert proc.wait(timeout=120) == 0
    expected = [i * 10 for i in range(n)] + [(100 + i) * 10 for i in range(n)]
    assert (tmp_path / "out").read_text().split() == [str(v) for v in expected]
    runs = counter.read_text().split()
    assert sorted(runs, key=int) == [str(i) for i in range(n)] + [str(100 + i) for i in range(n)]

    # A third run submits nothing and runs nothing.
    proc = _run(tmp_path, n)
    assert proc.wait(timeout=60) == 0
    assert counter.read_text().split() == runs
