"""Fan-out on a live SLURM: hpcexec against raw sbatch and submitit, in one run.

    python benchmarks/slurm_fanout.py [--quick] [--n 1000] [--json PATH]

Needs a running SLURM (``bash tests/clusters/slurm.sh start``). Scheduler calls are counted
by wrapper scripts put first on PATH that log their name and exec the real command. Prints,
for each row, hpcexec's wall time, the reference's, their ratio, the target, and the calls.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter

import hpcexec

COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "scancel")
POLL: float | None = None  # hpcexec's default polling (1 s, backing off to 30 s)


def double(x):
    return x * 2


class CallLog:
    """Wrapper scripts first on PATH, each appending its name to a log before exec'ing."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="hpcexec-calls-")
        self.log = os.path.join(self.dir, "calls.log")
        for cmd in COMMANDS:
            real = shutil.which(cmd)
            if real is None:
                sys.exit(f"{cmd} not found: start SLURM with `bash tests/clusters/slurm.sh start`")
            path = os.path.join(self.dir, cmd)
            with open(path, "w") as f:
                f.write(f'#!/bin/sh\necho {cmd} >> {self.log}\nexec {real} "$@"\n')
            os.chmod(path, 0o755)
        os.environ["PATH"] = self.dir + os.pathsep + os.environ["PATH"]

    def take(self) -> Counter:
        try:
            with open(self.log) as f:
                counts = Counter(line.strip() for line in f)
        except FileNotFoundError:
            counts = Counter()
        open(self.log, "w").close()
        return counts


def wait_gone(job_ids: list[str]) -> None:
    """Until none of the jobs is pending or running."""
    ids = ",".join(job_ids)
    while True:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i", "-j", ids], capture_output=True, text=True
        ).stdout
        if not out.strip():
            return
        time.sleep(0.2)


def raw_array(n: int) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(
        ["sbatch", "--parsable", f"--array=0-{n - 1}", "--output=/dev/null", "--wrap", "true"],
        capture_output=True,
        text=True,
        check=True,
    )
    wait_gone([out.stdout.strip().split(";")[0]])
    return time.perf_counter() - t0


def raw_python_array(n: int) -> float:
    """The same array, each task starting the interpreter and importing cloudpickle, as any
    Python task must: what remains between this and hpcexec is hpcexec's own overhead."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--array=0-{n - 1}",
            "--output=/dev/null",
            "--wrap",
            f"{sys.executable} -c 'import cloudpickle'",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    wait_gone([out.stdout.strip().split(";")[0]])
    return time.perf_counter() - t0


def raw_loop(n: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    ids = [
        subprocess.run(
            ["sbatch", "--parsable", "--output=/dev/null", "--wrap", "true"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for _ in range(n)
    ]
    submitted = time.perf_counter() - t0
    wait_gone(ids)
    return submitted, time.perf_counter() - t0


def hpcexec_map(n: int, cache: str) -> float:
    t0 = time.perf_counter()
    with hpcexec.Executor("slurm", cache_dir=cache, poll_interval=POLL, time="0:10:00") as ex:
        out = list(ex.map(double, range(n)))
    assert out == [2 * x for x in range(n)]
    return time.perf_counter() - t0


def hpcexec_submits(n: int, cache: str) -> float:
    t0 = time.perf_counter()
    with hpcexec.Executor("slurm", cache_dir=cache, poll_interval=POLL, time="0:10:00") as ex:
        fs = [ex.submit(double, i) for i in range(n)]
        out = [f.result() for f in fs]
    assert out == [2 * x for x in range(n)]
    return time.perf_counter() - t0


def one_job_rounds(rounds: int, scratch: str, gap: float) -> dict[str, list[float]]:
    """Rounds of one job -> its result, in a shuffled order each round: hpcexec's submit
    (one Executor kept across rounds, its default polling), submitit's (one AutoExecutor),
    and a raw ``sbatch`` until the job has left squeue. The cluster idles ``gap`` s before
    each job, so none waits on the previous one's clean-up."""
    import random

    import submitit

    ex = hpcexec.Executor("slurm", cache_dir=f"{scratch}/one", poll_interval=POLL, time="0:10:00")
    sub = submitit.AutoExecutor(folder=f"{scratch}/submitit-one", cluster="slurm")
    sub.update_parameters(slurm_partition="debug", timeout_min=10)

    def timed(fn, i):
        t0 = time.perf_counter()
        assert fn(i) == 2 * i
        return time.perf_counter() - t0

    def raw(i):
        wait_gone([single_sbatch()])
        return 2 * i

    sides = {
        "hpcexec": lambda i: ex.submit(double, i).result(),
        "submitit": lambda i: sub.submit(double, i).result(),
        "raw sbatch": raw,
    }
    out: dict[str, list[float]] = {k: [] for k in sides}
    try:
        for r in range(rounds):
            for name in random.sample(list(sides), len(sides)):
                time.sleep(gap)
                out[name].append(timed(sides[name], 1000 * r + len(out[name])))
    finally:
        ex.shutdown()
    return out


def single_sbatch() -> str:
    return subprocess.run(
        ["sbatch", "--parsable", "--output=/dev/null", "--wrap", "true"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def submitit_map(n: int, folder: str) -> float | None:
    try:
        import submitit
    except ImportError:
        return None
    t0 = time.perf_counter()
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    ex.update_parameters(slurm_partition="debug", timeout_min=10, slurm_array_parallelism=n)
    jobs = ex.map_array(double, range(n))
    out = [j.result() for j in jobs]
    assert out == [2 * x for x in range(n)]
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one run per row instead of three")
    ap.add_argument("--n", type=int, default=1000, help="tasks in the map (default 1000)")
    ap.add_argument("--loop", type=int, default=200, help="separate submits (default 200)")
    ap.add_argument("--poll", type=float, help="hpcexec's poll_interval (default: its own)")
    ap.add_argument(
        "--rows",
        default="14235",
        help="rows to run: 1 raw array, 4 raw python array, 2 submitit, 3 loop, 5 one job",
    )
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    global POLL
    POLL = args.poll
    reps = 1 if args.quick else 3
    calls = CallLog()
    scratch = tempfile.mkdtemp(prefix="hpcexec-fanout-", dir=os.getcwd())
    rows = []

    def measure(label, ours, ref, target, check):
        ours_t, ref_t, counts = [], [], Counter()
        for i in range(reps):
            if ref is not None:
                r = ref(i)
                if r is not None:
                    ref_t.append(r)
            calls.take()
            ours_t.append(ours(i))
            counts = calls.take()
        o = statistics.median(ours_t)
        r = statistics.median(ref_t) if ref_t else None
        rows.append(
            dict(
                row=label,
                hpcexec=o,
                reference=r,
                ratio=(o / r if r else None),
                target=target,
                ok=check(o, r, counts),
                calls=dict(counts),
            )
        )
        print(
            f"  {label}: hpcexec {o:.2f} s, reference {r if r is None else round(r, 2)} s, "
            f"calls {dict(counts)}",
            flush=True,
        )

    n, loop = args.n, args.loop
    print(f"SLURM fan-out, {reps} run(s) per row, n={n}, loop={loop}, poll={POLL}", flush=True)
    if "1" in args.rows:
        measure(
            f"map of {n} vs raw sbatch --array",
            lambda i: hpcexec_map(n, f"{scratch}/m{i}"),
            lambda i: raw_array(n),
            "<= 1.3x, 1 sbatch per array chunk",
            lambda o, r, c: o <= 1.3 * r and c["sbatch"] <= -(-n // 1000),
        )
    if "4" in args.rows:
        measure(
            f"map of {n} vs raw array of python tasks",
            lambda i: hpcexec_map(n, f"{scratch}/p{i}"),
            lambda i: raw_python_array(n),
            "<= 1.3x",
            lambda o, r, c: o <= 1.3 * r,
        )
    if "2" in args.rows:
        measure(
            f"map of {n} vs submitit map_array",
            lambda i: hpcexec_map(n, f"{scratch}/s{i}"),
            lambda i: submitit_map(n, f"{scratch}/submitit{i}"),
            "faster",
            lambda o, r, c: r is None or o < r,
        )
    raw = {}

    def raw_loop_total(i):
        raw[i] = raw_loop(loop)
        return raw[i][1]

    if "3" in args.rows:
        measure(
            f"{loop} submits vs raw sbatch loop",
            lambda i: hpcexec_submits(loop, f"{scratch}/l{i}"),
            raw_loop_total,
            ">= 50% of raw throughput, <= 5 sbatch",
            lambda o, r, c: o <= 2 * r and c["sbatch"] <= 5,
        )
    if "5" in args.rows:
        took = one_job_rounds(5 if args.quick else 9, scratch, gap=1.5)
        ours = statistics.median(took["hpcexec"])
        for ref_name, factor in (("submitit", 0.9), ("raw sbatch", 1.15)):
            ref = statistics.median(took[ref_name])
            rows.append(
                dict(
                    row=f"one submit -> result vs {ref_name}",
                    hpcexec=ours,
                    reference=ref,
                    ratio=ours / ref,
                    target=f"<= {factor}x (rounds shuffled)",
                    ok=ours <= factor * ref,
                    calls={},
                )
            )
        medians = {k: round(statistics.median(v), 3) for k, v in took.items()}
        print(f"  one job, medians of {len(took['hpcexec'])} rounds: {medians}", flush=True)
    print()
    print(f"{'row':42} {'hpcexec':>9} {'reference':>10} {'ratio':>7}  {'target':38} result  calls")
    for r in rows:
        ref = f"{r['reference']:.2f} s" if r["reference"] else "n/a"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "n/a"
        print(
            f"{r['row']:42} {r['hpcexec']:7.2f} s {ref:>10} {ratio:>7}  {r['target']:38} "
            f"{'PASS' if r['ok'] else 'MISS':6}  {r['calls']}"
        )
    if raw:
        sub = statistics.median(v[0] for v in raw.values())
        print(
            f"\nraw sbatch loop: {sub:.2f} s to submit {loop}, "
            f"{statistics.median(v[1] for v in raw.values()):.2f} s until all done"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(calls.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
