"""scikit-learn through joblib on the local backend, against joblib's own loky backend.

Run on demand (this is not a test)::

    python benchmarks/joblib_local.py              # 4 rounds (~2 minutes on 2 cores)
    python benchmarks/joblib_local.py --rounds 2
    python benchmarks/joblib_local.py --json out.json

Needs ``pip install '.[joblib]' scikit-learn``. Each workload runs under
``parallel_config(backend=..., n_jobs=2)`` in a fresh interpreter that has already imported
scikit-learn and built its data; what is timed is the call alone (for hpcexec, creating the
Executor too). The two backends alternate, round by round, so a loaded machine slows both:

- **loky, cold**: a fresh process, so loky starts its workers for the call, as a script's
  first ``Parallel`` call does.
- **hpcexec, first**: the first round, from a fork server that has learned nothing yet (it
  is stopped before each workload).
- **hpcexec, warm**: the later rounds: the fork server has learned what the first round's
  jobs imported (:mod:`hpcexec.preload`) and forks jobs with scikit-learn already imported.

Figures are medians over rounds (the first round alone for "hpcexec, first"); the ratio is
hpcexec warm / loky cold, target <= 1.3x. Exit status 1 when a measurement failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

from hpcexec import forkserver

WORKLOADS = {
    "GridSearchCV (6 x cv=3)": """
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC
X, y = load_digits(return_X_y=True)
def work():
    GridSearchCV(SVC(), {"C": [0.1, 1, 10], "gamma": [1e-3, 1e-4]}, cv=3).fit(X, y)
""",
    "cross_val_score (RF, cv=5)": """
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import cross_val_score
X, y = load_digits(return_X_y=True)
def work():
    cross_val_score(RandomForestClassifier(n_estimators=50, random_state=0), X, y, cv=5)
""",
    "permutation_importance (RF)": """
from sklearn.datasets import load_diabetes
from sklearn.ensemble import RandomForestRegressor
from sklearn.inspection import permutation_importance
X, y = load_diabetes(return_X_y=True)
model = RandomForestRegressor(n_estimators=50, random_state=0).fit(X, y)
def work():
    permutation_importance(model, X, y, n_repeats=5, random_state=0)
""",
}

DRIVER = """
import sys, time
from joblib import parallel_config
{setup}
backend, cache = sys.argv[1], sys.argv[2]
if backend == "hpcexec":
    import hpcexec, hpcexec.adapters.joblib
    t = time.perf_counter()
    with hpcexec.Executor(cache_dir=cache) as ex:
        with parallel_config(backend="hpcexec", n_jobs=2, executor=ex):
            work()
        elapsed = time.perf_counter() - t
else:
    t = time.perf_counter()
    with parallel_config(backend="loky", n_jobs=2):
        work()
    elapsed = time.perf_counter() - t
print(elapsed)
"""


def measure(setup: str, backend: str) -> float:
    """Seconds one call of the workload took in a fresh interpreter with ``backend``."""
    with tempfile.TemporaryDirectory(prefix="hpcexec-bench-") as tmp:
        p = subprocess.run(
            [sys.executable, "-c", DRIVER.format(setup=setup), backend, tmp],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp,
        )
    if p.returncode != 0:
        raise RuntimeError(f"{backend} failed:\n{p.stderr[-3000:]}")
    return float(p.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=4, help="rounds per workload (at least 2)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = ap.parse_args(argv)
    rounds = max(2, args.rounds)
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {rounds} rounds")
    rows = []
    for name, setup in WORKLOADS.items():
        forkserver.stop(sys.executable)  # "first" starts from a server that learned nothing
        times: dict[str, list[float]] = {"loky": [], "hpcexec": []}
        for r in range(rounds):
            for backend in ("loky", "hpcexec") if r % 2 == 0 else ("hpcexec", "loky"):
                times[backend].append(measure(setup, backend))
                print(f"  {name}: round {r + 1} {backend} {times[backend][-1]:.2f} s", flush=True)
        loky = statistics.median(times["loky"])
        warm = statistics.median(times["hpcexec"][1:])
        rows.append(
            dict(
                work=name,
                loky_cold=loky,
                hpcexec_first=times["hpcexec"][0],
                hpcexec_warm=warm,
                ratio=warm / loky,
            )
        )
    print()
    print("| work | loky, cold | hpcexec, first | hpcexec, warm | ratio | target |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        verdict = "PASS" if row["ratio"] <= 1.3 else "MISS"
        print(
            f"| {row['work']} | {row['loky_cold']:.2f} s | {row['hpcexec_first']:.2f} s "
            f"| {row['hpcexec_warm']:.2f} s | {row['ratio']:.2f}x | <= 1.3x {verdict} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
