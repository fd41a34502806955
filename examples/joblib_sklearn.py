"""scikit-learn's own joblib calls as hpcexec jobs: a grid search whose fits run as jobs.

Needs ``pip install '.[joblib]' scikit-learn``; a scheduler only when one is named. It
keeps its jobs in ``.hpcexec/`` in the current directory (ignored by git).

    python examples/joblib_sklearn.py                 # on this machine (local backend)
    python examples/joblib_sklearn.py slurm debug     # on SLURM, partition "debug"

Importing ``hpcexec.adapters.joblib`` registers the joblib backend ``"hpcexec"``. Inside
``parallel_config(backend="hpcexec", ...)`` every ``joblib.Parallel`` call, scikit-learn's
included, sends its batches to the executor. Short fits are packed into one job (a job
carries about ``batch_seconds`` of work), so job start-up is paid rarely.
"""

from __future__ import annotations

import sys
import time

from joblib import parallel_config
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC

import hpcexec
import hpcexec.adapters.joblib


def main() -> None:
    backend = sys.argv[1] if len(sys.argv) > 1 else "local"
    queue = {"queue": sys.argv[2]} if len(sys.argv) > 2 else {}
    X, y = load_digits(return_X_y=True)
    grid = {"C": [0.1, 1, 10], "gamma": [1e-4, 1e-3, 1e-2]}

    ex = hpcexec.Executor(backend, cache_dir=".hpcexec", time="00:20:00", **queue)
    t0 = time.perf_counter()
    with parallel_config(backend="hpcexec", executor=ex, n_jobs=-1):
        search = GridSearchCV(SVC(), grid, cv=5).fit(X, y)
    print(
        f"best {search.best_params_}, score {search.best_score_:.3f}, "
        f"{len(grid['C']) * len(grid['gamma']) * 5} fits in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    jobs = [r for r in ex.store.select() if r.name.startswith("joblib-")]
    print(f"{len(jobs)} job(s) in {ex.cache_dir}, the last: {jobs[-1].name} {jobs[-1].job_id}")
    ex.shutdown()


if __name__ == "__main__":
    main()
