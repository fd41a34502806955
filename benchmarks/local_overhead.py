"""Overhead of hpcexec's local backend, measured against references in the same run.

Run on demand (this is not a test)::

    python benchmarks/local_overhead.py            # medians of 3 runs (~3 minutes)
    python benchmarks/local_overhead.py --quick    # 1 run each (~1 minute)
    python benchmarks/local_overhead.py --json out.json

Rows (seconds; "ratio" is always hpcexec / reference):

1. ``map`` of 1000 trivial calls with default chunking, from creating the Executor to
   having every result, against ``concurrent.futures.ProcessPoolExecutor(2)`` doing the same
   map including its start-up. Target: hpcexec <= 2x ProcessPool.
2. 200 separate ``submit`` calls, then every result, against submitit's ``LocalExecutor``
   doing 200 submits -> results. Target: hpcexec at least 10x faster (ratio <= 0.1).
3. One ``submit`` -> result round trip (median of 5, always). Target: <= 0.3 s.
4. Re-run of a finished 10,000-call ``map`` from the cache, with a new Executor on the same
   cache directory. Target: <= 5 s, and no job may be submitted or started by the re-run.

Every hpcexec measurement uses a fresh temporary cache directory (except the re-run, which
by design reuses the one its untimed first run filled) and shuts its Executor down outside
the timed span. The exit status is 0 when every measurement ran (PASS or MISS) and 1 when
one could not be taken (an error, a timeout, or a wrong result).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import hpcexec
import hpcexec.executor  # import the lazy parts now, so the first timing does not pay for it
from hpcexec import Executor, forkserver

try:
    import submitit
except ImportError:  # the reference is optional
    submitit = None

MAP_N = 1000
SUBMIT_N = 200
RERUN_N = 10_000
ROUND_TRIPS = 5
TIMEOUT = 300.0  # seconds any one hpcexec measurement may take before it counts as hung


def double(x):
    return x * 2


# -- bookkeeping -------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    reference_name: str
    target: str
    hpcexec_s: float | None = None
    reference_s: float | None = None
    ratio: float | None = None
    status: str = "-"  # PASS, MISS, ERROR or SKIP
    hpcexec_samples: list[float] = field(default_factory=list)
    reference_samples: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Scratch:
    """Temporary directories, all removed at the end."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="hpcexec-bench-")

    def new(self, prefix: str) -> str:
        return tempfile.mkdtemp(prefix=prefix, dir=self.root)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def close(ex: Executor, ok: bool) -> float:
    """Shut an executor down; returns how long it took. After a failure, do not wait for
    futures that may never finish."""
    t = time.perf_counter()
    if ok:
        ex.shutdown(wait=True)
    else:
        ex.shutdown(wait=False, cancel_futures=True)
    return time.perf_counter() - t


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def check_values(got: list[Any], n: int) -> None:
    want = [double(i) for i in range(n)]
    if got != want:
        bad = (
            next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
            if len(got) == n
            else None
        )
        raise AssertionError(f"wrong results: {len(got)} values, first mismatch at {bad}")


# -- measurements ---------------------------------------------------------------------------


def hpcexec_map(scratch: Scratch, n: int) -> tuple[float, float]:
    cache = scratch.new("map-")
    t0 = time.perf_counter()
    ex = Executor(cache_dir=cache)
    ok = False
    try:
        out = list(ex.map(double, range(n), timeout=TIMEOUT))
        elapsed = time.perf_counter() - t0
        check_values(out, n)
        ok = True
    finally:
        shut = close(ex, ok)
    return elapsed, shut


def pool_map(n: int) -> float:
    t0 = time.perf_counter()
    pool = concurrent.futures.ProcessPoolExecutor(2)
    try:
        out = list(pool.map(double, range(n), timeout=TIMEOUT))
        elapsed = time.perf_counter() - t0
    finally:
        pool.shutdown(wait=True)
    check_values(out, n)
    return elapsed


def hpcexec_submits(scratch: Scratch, n: int) -> tuple[float, float]:
    cache = scratch.new("submits-")
    t0 = time.perf_counter()
    ex = Executor(cache_dir=cache)
    ok = False
    try:
        futures = [ex.submit(double, i) for i in range(n)]
        deadline = time.monotonic() + TIMEOUT
        out = [f.result(timeout=max(0.0, deadline - time.monotonic())) for f in futures]
        elapsed = time.perf_counter() - t0
        check_values(out, n)
        ok = True
    finally:
        shut = close(ex, ok)
    return elapsed, shut


LOKY = """
import sys, time
from joblib import Parallel, delayed
def double(x):
    return x * 2
t0 = time.perf_counter()
out = Parallel(n_jobs=2, backend="loky")(delayed(double)(i) for i in range(int(sys.argv[1])))
print(time.perf_counter() - t0)
assert out == [2 * i for i in range(int(sys.argv[1]))]
"""


def loky_fresh(n: int) -> float:
    """joblib's loky, ``n`` calls on 2 workers in a fresh process (workers started cold)."""
    out = subprocess.run(
        [sys.executable, "-c", LOKY, str(n)], capture_output=True, text=True, timeout=TIMEOUT
    )
    if out.returncode:
        raise RuntimeError(out.stderr.strip()[-500:])
    return float(out.stdout.strip())


def submitit_submits(scratch: Scratch, n: int) -> float:
    folder = scratch.new("submitit-")
    t0 = time.perf_counter()
    ex = submitit.LocalExecutor(folder=folder)
    # Each job gets its own controller process; with 200 of them sharing the cores a job can
    # take tens of seconds of wall time. 5 minutes leaves ample room and still ends a hang.
    ex.update_parameters(timeout_min=5)
    jobs = [ex.submit(double, i) for i in range(n)]
    out = [j.result() for j in jobs]
    elapsed = time.perf_counter() - t0
    for j in jobs:  # let every controller exit before the next measurement
        if j._process is not None:
            j._process.wait(timeout=60)
    check_values(out, n)
    return elapsed


def hpcexec_round_trip(scratch: Scratch, i: int) -> tuple[float, float]:
    cache = scratch.new("roundtrip-")
    ex = Executor(cache_dir=cache)
    ok = False
    try:
        t0 = time.perf_counter()
        value = ex.submit(double, i).result(timeout=TIMEOUT)
        elapsed = time.perf_counter() - t0
        if value != double(i):
            raise AssertionError(f"wrong result {value!r}")
        ok = True
    finally:
        shut = close(ex, ok)
    return elapsed, shut


def hpcexec_first_run(cache: str, n: int) -> tuple[float, int]:
    """The untimed first run that fills the cache; returns its time and record count."""
    t0 = time.perf_counter()
    ex = Executor(cache_dir=cache)
    ok = False
    try:
        out = list(ex.map(double, range(n), timeout=TIMEOUT))
        elapsed = time.perf_counter() - t0
        check_values(out, n)
        records = len(ex.store.query())
        ok = True
    finally:
        close(ex, ok)
    return elapsed, records


def hpcexec_rerun(cache: str, n: int) -> tuple[float, float, int, bool]:
    """Returns (time, shutdown time, records submitted or started during it, revision moved)."""
    wall0 = time.time()
    t0 = time.perf_counter()
    ex = Executor(cache_dir=cache)
    ok = False
    try:
        rev0 = ex.store.revision()
        out = list(ex.map(double, range(n), timeout=TIMEOUT))
        elapsed = time.perf_counter() - t0
        check_values(out, n)
        new = ex.store.query("submitted > ? OR started > ?", (wall0, wall0))
        moved = ex.store.revision() != rev0
        ok = True
    finally:
        shut = close(ex, ok)
    return elapsed, shut, len(new), moved


# -- driver -------------------------------------------------------------------------------------


def attempt(row: Row, what: str, fn: Callable[[], Any]) -> Any:
    """Run one measurement; on failure mark the row ERROR and return None."""
    try:
        return fn()
    except Exception as e:  # a failed sample is reported, the run goes on  # noqa: BLE001
        row.status = "ERROR"
        row.notes.append(f"{what}: {type(e).__name__}: {e}")
        print(
            f"  {what} failed:\n" + "".join(traceback.format_exception(e)).rstrip(), file=sys.stderr
        )
        return None


def progress(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def run_all(reps: int, quick: bool, scratch: Scratch) -> list[Row]:
    r_map = Row(f"1. map of {MAP_N}, default chunks", "ProcessPoolExecutor(2)", "<= 2x ref")
    r_sub = Row(
        f"2. {SUBMIT_N} submits -> results", "submitit LocalExecutor", "<= 0.1x ref (10x faster)"
    )
    r_rt = Row(f"3. 1 submit -> result (med. of {ROUND_TRIPS})", "-", "<= 0.30 s")
    r_re = Row(f"4. re-run of {RERUN_N:,} from cache", "-", "<= 5 s, 0 jobs run")
    r_cold = Row(f"1b. map of {MAP_N}, cold fork server", "ProcessPoolExecutor(2)", "<= 2x ref")
    r_loky = Row(f"2b. {SUBMIT_N} submits -> results", "joblib loky(2), fresh", "<= 1x ref")
    rows = [r_map, r_cold, r_sub, r_loky, r_rt, r_re]
    shutdowns: dict[str, list[float]] = {r.name: [] for r in rows}

    # 1. Alternate the two sides so drift in machine load hits both alike.
    for i in range(reps):
        progress(f"map {MAP_N}: run {i + 1}/{reps}")
        got = attempt(r_map, "ProcessPool map", lambda: pool_map(MAP_N))
        if got is not None:
            r_map.reference_samples.append(got)
        got = attempt(r_map, "hpcexec map", lambda: hpcexec_map(scratch, MAP_N))
        if got is not None:
            r_map.hpcexec_samples.append(got[0])
            shutdowns[r_map.name].append(got[1])

    # 1b. The same with no fork server running yet: the first map of a session pays its start.
    for i in range(reps):
        progress(f"map {MAP_N}, cold fork server: run {i + 1}/{reps}")
        forkserver.stop(sys.executable)
        time.sleep(0.2)
        got = attempt(r_cold, "hpcexec map (cold)", lambda: hpcexec_map(scratch, MAP_N))
        if got is not None:
            r_cold.hpcexec_samples.append(got[0])
            shutdowns[r_cold.name].append(got[1])
    r_cold.reference_samples = list(r_map.reference_samples)

    # 3.
    for i in range(ROUND_TRIPS):
        progress(f"round trip {i + 1}/{ROUND_TRIPS}")
        got = attempt(r_rt, "round trip", lambda i=i: hpcexec_round_trip(scratch, i))
        if got is not None:
            r_rt.hpcexec_samples.append(got[0])
            shutdowns[r_rt.name].append(got[1])

    # 4.
    cache = scratch.new("rerun-")
    progress(f"re-run: first run of {RERUN_N} (not timed)")
    first = attempt(r_re, "first run", lambda: hpcexec_first_run(cache, RERUN_N))
    if first is not None:
        r_re.extra["first_run_s"] = first[0]
        r_re.extra["records"] = first[1]
        r_re.notes.append(f"first run {first[0]:.2f} s, {first[1]} job records")
        started_total, moved_any = 0, False
        for i in range(reps):
            progress(f"re-run {i + 1}/{reps}")
            got = attempt(r_re, "re-run", lambda: hpcexec_rerun(cache, RERUN_N))
            if got is not None:
                r_re.hpcexec_samples.append(got[0])
                shutdowns[r_re.name].append(got[1])
                started_total += got[2]
                moved_any = moved_any or got[3]
        r_re.extra["jobs_run_by_reruns"] = started_total
        r_re.extra["store_written_by_reruns"] = moved_any
        if r_re.hpcexec_samples:
            if started_total:
                r_re.notes.append(f"re-runs submitted or started {started_total} job(s)")
            else:
                r_re.notes.append("no job submitted or started by the re-runs")
            if moved_any:
                r_re.notes.append("the re-runs wrote to the store")

    # 2. hpcexec first, alternating with loky (2b), then submitit, which floods the machine
    # with processes.
    for i in range(reps):
        progress(f"{SUBMIT_N} hpcexec submits: run {i + 1}/{reps}")
        got = attempt(r_sub, "hpcexec submits", lambda: hpcexec_submits(scratch, SUBMIT_N))
        if got is not None:
            r_sub.hpcexec_samples.append(got[0])
            shutdowns[r_sub.name].append(got[1])
        got = attempt(r_loky, "loky", lambda: loky_fresh(SUBMIT_N))
        if got is not None:
            r_loky.reference_samples.append(got)
    r_loky.hpcexec_samples = list(r_sub.hpcexec_samples)
    if submitit is None:
        print("submitit not installed", flush=True)
        r_sub.notes.append("submitit not installed: reference skipped")
    else:
        sub_reps = 1 if quick else reps
        for i in range(sub_reps):
            progress(f"{SUBMIT_N} submitit submits: run {i + 1}/{sub_reps} (slow)")
            got = attempt(r_sub, "submitit submits", lambda: submitit_submits(scratch, SUBMIT_N))
            if got is not None:
                r_sub.reference_samples.append(got)

    for row in rows:
        row.hpcexec_s = median(row.hpcexec_samples)
        row.reference_s = median(row.reference_samples)
        if row.hpcexec_s is not None and row.reference_s:
            row.ratio = row.hpcexec_s / row.reference_s
        if shutdowns[row.name]:
            row.extra["shutdown_max_s"] = max(shutdowns[row.name])
        if row.status == "ERROR":
            continue
        if row is r_map:
            ok = row.ratio is not None and row.ratio <= 2.0
        elif row is r_sub:
            ok = row.ratio is not None and row.ratio <= 0.1
        elif row is r_loky:
            ok = row.ratio is not None and row.ratio <= 1.0
        elif row is r_rt:
            ok = row.hpcexec_s is not None and row.hpcexec_s <= 0.3
        else:
            ok = (
                row.hpcexec_s is not None
                and row.hpcexec_s <= 5.0
                and not row.extra.get("jobs_run_by_reruns")
            )
        if row is r_sub and row.reference_s is None and row.hpcexec_s is not None:
            row.status = "SKIP"
        elif row.hpcexec_s is None:
            row.status = "ERROR"
        else:
            row.status = "PASS" if ok else "MISS"
    return rows


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f} s"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}x"


def print_table(rows: list[Row], reps: int, quick: bool) -> None:
    head = ("benchmark", "hpcexec", "reference", "ratio", "target", "result")
    body = []
    for r in rows:
        ref = "-" if r.reference_name == "-" else f"{fmt_s(r.reference_s)} ({r.reference_name})"
        body.append((r.name, fmt_s(r.hpcexec_s), ref, fmt_ratio(r.ratio), r.target, r.status))
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    print()
    print(
        f"Medians of {reps} run(s){' (--quick; submitit run once)' if quick else ''}; "
        "ratio = hpcexec / reference"
    )
    print(line(head))
    print(line(["-" * w for w in widths]))
    for cells in body:
        print(line(cells))
    notes = [(r.name.split(".")[0], n) for r in rows for n in r.notes]
    for r in rows:
        s = r.extra.get("shutdown_max_s")
        if s is not None and s > 0.5:
            notes.append((r.name.split(".")[0], f"slowest shutdown(wait=True) took {s:.2f} s"))
    if notes:
        print()
        for num, n in notes:
            print(f"  [{num}] {n}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one run per figure instead of three")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = ap.parse_args(argv)
    reps = 1 if args.quick else 3

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    meta = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": affinity,
        "hpcexec": hpcexec.__version__,
        "submitit": getattr(submitit, "__version__", None),
        "mp_start_method": multiprocessing.get_start_method(),
        "quick": args.quick,
        "runs_per_figure": reps,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(f"Python {meta['python']} ({meta['implementation']}) on {meta['platform']}")
    print(
        f"cpu count {meta['cpu_count']} (usable {affinity}); multiprocessing start method "
        f"{meta['mp_start_method']}"
    )
    print(f"hpcexec {meta['hpcexec']}; submitit {meta['submitit'] or 'not installed'}", flush=True)

    scratch = Scratch()
    t0 = time.perf_counter()
    try:
        rows = run_all(reps, args.quick, scratch)
    finally:
        scratch.cleanup()
    meta["total_s"] = time.perf_counter() - t0
    print_table(rows, reps, args.quick)
    print(f"\ntotal benchmark time {meta['total_s']:.1f} s")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": [asdict(r) for r in rows]}, f, indent=2)
            f.write("\n")
    return 1 if any(r.status == "ERROR" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
