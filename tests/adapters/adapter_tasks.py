"""Functions the adapter tests run inside jobs (importable there by module name)."""

from __future__ import annotations

import os
import time


class TaskError(Exception):
    """An exception of the tests' own type, to check that its type survives the job."""


def square(x: int) -> int:
    return x * x


def square_and_pid(x: int) -> tuple[int, int]:
    """The square, and which process (so which job) computed it."""
    return x * x, os.getpid()


def sleepy(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x


def fail_on(x: int, bad: int, seconds: float = 0.0) -> int:
    if x == bad:
        raise TaskError(f"task {x} failed on purpose")
    time.sleep(seconds)
    return x


def die(code: int) -> None:
    os._exit(code)


def env(name: str) -> str | None:
    return os.environ.get(name)


def nested_outer(x: int) -> tuple[list[int], str]:
    """A task that runs a Parallel call of its own, inside the job."""
    from joblib import Parallel, delayed
    from joblib.parallel import get_active_backend

    backend, _ = get_active_backend()
    return Parallel(n_jobs=2)(delayed(square)(x + i) for i in range(3)), type(backend).__name__


def square_where(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def nested_hpcexec(x: int, config: bool = False) -> tuple[list[int], set[int], int]:
    """A task whose own Parallel call names the hpcexec backend (by ``Parallel(backend=...)``,
    or by ``parallel_config`` when ``config``): the values, the processes that computed them,
    and this job's process."""
    from joblib import Parallel, delayed, parallel_config

    import hpcexec.adapters.joblib  # noqa: F401  (registers the backend, as a user's code does)

    calls = (delayed(square_where)(x + i) for i in range(3))
    if config:
        with parallel_config(backend="hpcexec", n_jobs=2):
            out = Parallel()(calls)
    else:
        out = Parallel(backend="hpcexec", n_jobs=2)(calls)
    return [v for v, _ in out], {pid for _, pid in out}, os.getpid()
