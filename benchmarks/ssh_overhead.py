"""What driving SLURM over SSH costs: hpcexec from "another machine" against hpcexec on the
login node itself, on the same live SLURM, in one run; over the loopback and over a link that
delays each direction (a real distance: 25 ms each way is a 50 ms round trip).

    python benchmarks/ssh_overhead.py [--quick] [--n 50] [--delay-ms 25] [--host root@127.0.0.1:PORT]

The default host is the loopback sshd of ``bash tests/clusters/sshd.sh start`` (its first
port, as tests/sshtest.py finds it) with its client key and known-hosts file; the delayed link
is a relay of ``tests/delaylink.py`` in front of it, run in a process of its own (so the
client's threads do not hold its packets back). For each workload (``n`` separate ``submit``
calls; a ``map`` of ``n``) it prints the wall time without SSH, over the loopback and over the
delayed link (connecting and checking the remote Python included), their ratios against the
targets (<= 1.3x loopback, <= 1.5x delayed), the SSH connections the remote executor opened
(target 1) and the round trips per job over the delayed link (what the distance multiplies).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import hpcexec

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from delaylink import RelayProcess  # noqa: E402
from sshtest import DEST, SSHD_DIR, known_hosts_for  # noqa: E402  (the loopback sshd)

TARGETS = {"loopback": 1.3, "delayed": 1.5}


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
            opened = getattr(ex.session.transport, "connections_opened", 0)
        return time.perf_counter() - t0, opened


def measure(args: argparse.Namespace, connect: dict, link: RelayProcess, tmp: str) -> list:
    runs = 1 if args.quick else 3
    delayed = {
        **connect,
        "host": f"{connect['host'].rsplit(':', 1)[0]}:{link.port}",
        "known_hosts": str(
            known_hosts_for(link.port, Path(tmp, "known_hosts"), Path(connect["known_hosts"]))
        ),
    }
    rows = []
    for label, work in ((f"{args.n} separate submits", submits), (f"map of {args.n}", mapped)):
        local = statistics.median(timed(work, args.n)[0] for _ in range(runs))
        loop_runs = [timed(work, args.n, **connect) for _ in range(runs)]
        trips, far_runs = [], []
        for _ in range(runs):
            before = link.round_trips
            far_runs.append(timed(work, args.n, **delayed))
            trips.append(link.round_trips - before)
        loop = statistics.median(t for t, _ in loop_runs)
        far = statistics.median(t for t, _ in far_runs)
        opened = max(c for _, c in loop_runs + far_runs)
        per_job = statistics.median(trips) / args.n
        rows.append((label, local, loop, far, opened, per_job))
        print(f"  {label}: no SSH {local:.2f} s, loopback {loop:.2f} s, delayed {far:.2f} s")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one run per row instead of three")
    ap.add_argument("--n", type=int, default=50, help="tasks per workload (default 50)")
    ap.add_argument("--delay-ms", type=float, default=25.0, help="added each way (default 25)")
    ap.add_argument("--host", default=DEST)
    ap.add_argument("--ssh-key", default=os.path.join(SSHD_DIR, "client_key"))
    ap.add_argument("--known-hosts", default=os.path.join(SSHD_DIR, "known_hosts"))
    args = ap.parse_args()
    connect = dict(
        host=args.host, ssh_key=args.ssh_key, known_hosts=args.known_hosts, python=sys.executable
    )
    port = int(args.host.rsplit(":", 1)[1])
    print(f"SSH overhead on SLURM, n={args.n}, host {args.host}, delay {args.delay_ms} ms each way")
    with RelayProcess(port, args.delay_ms / 1000) as link, tempfile.TemporaryDirectory() as tmp:
        rows = measure(args, connect, link, tmp)
    print(
        f"\n{'work':24} {'no SSH':>7} {'loopback':>9} {'ratio':>6} {'delayed':>8} {'ratio':>6}"
        f"  {'conns':>5} {'trips/job':>9}  result"
    )
    for label, local, loop, far, opened, per_job in rows:
        ok = loop / local <= TARGETS["loopback"] and far / local <= TARGETS["delayed"]
        ok = ok and opened == 1
        print(
            f"{label:24} {local:6.2f}s {loop:8.2f}s {loop / local:5.2f}x {far:7.2f}s "
            f"{far / local:5.2f}x  {opened:5d} {per_job:9.2f}  {'PASS' if ok else 'MISS'}"
        )
    print(f"targets: loopback <= {TARGETS['loopback']}x, delayed <= {TARGETS['delayed']}x, 1 conn")
    return 0  # figures, not a test: a miss is reported, not an error


if __name__ == "__main__":
    sys.exit(main())
