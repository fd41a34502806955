"""What driving SLURM over SSH costs: hpcexec from "another machine" against hpcexec on the
login node itself, on the same live SLURM, in one run.

    python benchmarks/ssh_overhead.py [--quick] [--n 100] [--host root@127.0.0.1:PORT]

The default host is the loopback sshd of ``bash tests/clusters/sshd.sh start`` (its first
port, as tests/sshtest.py finds it) with its client key and known-hosts file. For each workload (``n`` separate ``submit`` calls; a
``map`` of ``n``) it prints the wall time without SSH, with SSH (connecting and checking the
remote Python included), their ratio against the target (<= 1.5x), and how many SSH
connections the remote executor opened (target 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import hpcexec

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from sshtest import DEST, SSHD_DIR  # the loopback sshd: its port and keys

TARGET = 1.5


def double(x):
    return x * 2


def submits(ex: hpcexec.Executor, n: int) -> list:
    fs = [ex.submit(double, i) for i in range(n)]
    return [f.result() for f in fs]


def mapped(ex: hpcexec.Executor, n: int) -> list:
    return list(ex.map(double, range(n)))


def timed(work: Callable[[hpcexec.Executor, int], list], n: int, **connect) -> tuple[float, int]:
    """Seconds from creating the executor to the last result; SSH connections opened."""
    with tempfile.TemporaryDirectory(prefix="hpcexec-bench-") as tmp:
        if connect:
            connect = {**connect, "remote_dir": os.path.join(tmp, "remote")}
        t0 = time.perf_counter()
        with hpcexec.Executor(
            "slurm", cache_dir=os.path.join(tmp, "cache"), time="0:10:00", **connect
        ) as ex:
            assert work(ex, n) == [2 * x for x in range(n)]
            opened = getattr(ex._core.transport, "connections_opened", 0)
        return time.perf_counter() - t0, opened


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one run per row instead of three")
    ap.add_argument("--n", type=int, default=100, help="tasks per workload (default 100)")
    ap.add_argument("--host", default=DEST)
    ap.add_argument("--ssh-key", default=os.path.join(SSHD_DIR, "client_key"))
    ap.add_argument("--known-hosts", default=os.path.join(SSHD_DIR, "known_hosts"))
    args = ap.parse_args()
    runs = 1 if args.quick else 3
    connect = dict(
        host=args.host, ssh_key=args.ssh_key, known_hosts=args.known_hosts, python=sys.executable
    )
    print(f"SSH overhead on SLURM, n={args.n}, {runs} run(s) per row (median), host {args.host}")
    rows = []
    for label, work in ((f"{args.n} separate submits", submits), (f"map of {args.n}", mapped)):
        local = statistics.median(timed(work, args.n)[0] for _ in range(runs))
        remote_runs = [timed(work, args.n, **connect) for _ in range(runs)]
        remote = statistics.median(t for t, _ in remote_runs)
        opened = max(c for _, c in remote_runs)
        ratio = remote / local
        ok = ratio <= TARGET and opened == 1
        rows.append((label, local, remote, ratio, opened, ok))
        print(f"  {label}: without SSH {local:.2f} s, over SSH {remote:.2f} s")
    print(
        f"\n{'work':28} {'no SSH':>8} {'SSH':>8} {'ratio':>7}  {'target':10} {'conns':>5}  result"
    )
    for label, local, remote, ratio, opened, ok in rows:
        print(
            f"{label:28} {local:7.2f}s {remote:7.2f}s {ratio:6.2f}x  <= {TARGET}x    "
            f"{opened:5d}  {'PASS' if ok else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
