"""A big cache: 100,000 job records, and what stays fast with them.

    python benchmarks/cache_scale.py [--records 100000] [--rerun 10000]

Fills a fresh cache with ``--records`` records of finished and running jobs (written through
the Store, as many clients over months would leave them), then runs a real ``--rerun``-task
``map`` on the local backend into the same cache, and measures:

1. ``hpcexec jobs --state running --json`` on that cache, the installed command in a
   subprocess as a user runs it (target <= 1 s);
1b. ``hpcexec jobs``, the default view: the 50 most recent and a line saying how many more
   (target <= 1 s);
1c. ``hpcexec jobs --json``, every record (target <= 5 s: seconds, not tens of seconds);
2. opening an ``Executor`` on it (target <= 0.5 s);
3. a re-run of the finished ``map`` with a new Executor: every result from the cache,
   nothing submitted or started (target <= 5 s; the store's revision must not move).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import hpcexec
from hpcexec.states import JobState
from hpcexec.store import JobRecord, Store

TARGETS = {
    "jobs --state running": 1.0,
    "jobs (default view)": 1.0,
    "jobs --json (all)": 5.0,
    "open an Executor": 0.5,
    "re-run of the map": 5.0,
}


def square(x):
    return x * x


def fill(cache: str, n: int) -> int:
    """n records of a past SLURM workload (1% still running); returns how many run."""
    store = Store(cache)
    now = time.time()
    running = 0
    with store.write() as tx:
        for i in range(n):
            state = (
                JobState.RUNNING
                if i % 100 == 0
                else (JobState.COMPLETED if i % 7 else JobState.FAILED)
            )
            running += state is JobState.RUNNING
            key = uuid.uuid4().hex
            tx.put(
                JobRecord(
                    key=key,
                    backend="slurm",
                    host="cluster-a",
                    kind="call",
                    jobdir=f"/scratch/old/jobs/{key}",
                    state=state,
                    name=f"sweep-{i % 50}",
                    job_id=f"{1000 + i // 1000}_{i % 1000}",
                    array_index=i % 1000,
                    submitted=now - 86400 * 30 + i,
                    started=now - 86400 * 30 + i + 5,
                    finished=None if state is JobState.RUNNING else now - 86400 + i,
                    exit_code=None if state is JobState.RUNNING else int(i % 7 == 0),
                )
            )
    store.close()
    return running


def hpcexec_cli(hx: str, cache: str, *args: str) -> str:
    """The installed command's output, as a user runs it (no scheduler asked)."""
    argv = [hx, "--cache-dir", cache, *args, "--no-refresh"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rerun", type=int, default=10_000)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="hpcexec-scale-")
    cache = os.path.join(tmp, "cache")
    try:
        t, running = timed(lambda: fill(cache, args.records))
        print(f"filled {args.records} records in {t:.1f} s ({running} running)")
        with hpcexec.Executor(cache_dir=cache) as ex:
            t, _ = timed(lambda: list(ex.map(square, range(args.rerun))))
        print(f"first run of the {args.rerun}-task map: {t:.1f} s")
        hx = shutil.which("hpcexec") or sys.exit("the hpcexec command is not installed")
        t_jobs, out = timed(
            lambda: (
                subprocess.run(
                    [hx, "--cache-dir", cache, "jobs", "--state", "running", "--json"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
        )
        listed = json.loads(out)
        assert len(listed) == running, (len(listed), running)
        t_view, shown = timed(lambda: hpcexec_cli(hx, cache, "jobs"))
        assert len(shown.splitlines()) == 51, "the default view is 50 jobs and a header"
        t_all, out = timed(lambda: hpcexec_cli(hx, cache, "jobs", "--json"))
        n_all = len(json.loads(out))
        t_open, ex = timed(lambda: hpcexec.Executor(cache_dir=cache))
        rev = ex.store.revision()
        t_rerun, values = timed(lambda: list(ex.map(square, range(args.rerun))))
        assert values == [x * x for x in range(args.rerun)]
        rev_after = ex.store.revision()
        ex.shutdown()
        assert rev == rev_after, "the re-run changed the store: something was submitted"
        rows = [
            ("jobs --state running", t_jobs, f"{len(listed)} listed"),
            ("jobs (default view)", t_view, "the 50 most recent"),
            ("jobs --json (all)", t_all, f"{n_all} listed"),
            ("open an Executor", t_open, ""),
            ("re-run of the map", t_rerun, "nothing submitted or started"),
        ]
        print(f"\n{'work':24} {'seconds':>8}  {'target':>8}  result  note")
        for name, secs, note in rows:
            ok = secs <= TARGETS[name]
            print(
                f"{name:24} {secs:8.3f}  <= {TARGETS[name]:4.1f} s  {'PASS' if ok else 'MISS'}"
                f"    {note}"
            )
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
