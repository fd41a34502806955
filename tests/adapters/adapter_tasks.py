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
