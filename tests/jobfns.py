"""Functions the tests run as jobs. Kept in a light module: jobs import it by name."""

from __future__ import annotations

import os
import time


def double(x):
    return x * 2


def add(a, b=0):
    return a + b


def fail(msg="boom"):
    raise ValueError(msg)


def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


def env(*names):
    return {n: os.environ.get(n) for n in names}


def record_interval(path, seconds):
    """Append this job's start and end time to ``path`` (one line per job)."""
    t0 = time.time()
    time.sleep(seconds)
    t1 = time.time()
    with open(path, "a") as f:
        f.write(f"{t0} {t1}\n")
    return t1 - t0


def count_run(path, value, seconds=0.0):
    """Record one execution of ``value`` in ``path`` (append is atomic for short lines)."""
    with open(path, "a") as f:
        f.write(f"{value}\n")
    time.sleep(seconds)
    return value * 10


def pid():
    return os.getpid()


class CustomError(Exception):
    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


def raise_custom():
    raise CustomError(7, "custom detail")


def wait_for(path, value, timeout=120.0):
    """Block until ``path`` exists (a gate the test opens), then return ``value``."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.05)
    return value


def where(i):
    """Which process ran task ``i``, under which element, with which variables."""
    print(f"task {i} on stdout")
    return {
        "i": i,
        "pid": os.getpid(),
        "parent": os.getppid(),
        "index": os.environ.get("HPCEXEC_ARRAY_INDEX"),
        "job_id": os.environ.get("HPCEXEC_JOB_ID"),
        "cwd": os.getcwd(),
    }


def write_pid_then_sleep(path, seconds):
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(seconds)


def blob(size):
    return b"x" * size


def hard_exit(code):
    os._exit(code)


def use_memory(mib, limit_mib=None, hold=0.0):
    """Fill ``mib`` MiB (touched, so resident), under an address-space limit of ``limit_mib``
    set here when given; hold it ``hold`` seconds."""
    if limit_mib:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit_mib * 2**20, resource.RLIM_INFINITY))
    block = b"x" * (mib * 2**20)
    time.sleep(hold)
    return len(block)


def read_stdin():
    """What the job's standard input holds."""
    import sys

    return sys.stdin.read()


def print_both(out, err):
    """Write ``out`` to standard output, then ``err`` to standard error."""
    import sys

    print(out, flush=True)
    print(err, file=sys.stderr, flush=True)
    return True


def task_rank():
    import hpcexec

    return hpcexec.task().rank


def task_and_env():
    """This task as hpcexec.task() says, and the conventional variables."""
    import dataclasses

    import hpcexec

    names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    return dataclasses.asdict(hpcexec.task()), {n: os.environ.get(n) for n in names}


def rank_fails(bad_rank, seconds):
    """Rank ``bad_rank`` raises at once; the others sleep ``seconds`` then return."""
    import hpcexec

    if hpcexec.task().rank == bad_rank:
        raise ValueError(f"rank {bad_rank} failed")
    time.sleep(seconds)
    return "slept"


def task_on_node():
    """This task as hpcexec.task() says, the conventional variables, the host it runs on
    and the job's HPCEXEC_NODELIST."""
    import platform

    t, env = task_and_env()
    return t, env, platform.node(), os.environ.get("HPCEXEC_NODELIST")


def mpi_allreduce():
    """MPI's view of this task and the allreduce of rank + 1 over COMM_WORLD."""
    import platform

    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    return comm.Get_rank(), comm.Get_size(), platform.node(), comm.allreduce(comm.Get_rank() + 1)


def needs_mem(i, mib):
    """``i``, or MemoryError when the job was given less than ``mib`` MiB (SLURM's
    SLURM_MEM_PER_NODE, from the job's ``mem``)."""
    have = int(os.environ.get("SLURM_MEM_PER_NODE", "0"))
    if have < mib:
        raise MemoryError(f"call {i} needs {mib} MiB; the job has {have}")
    return i


def killed_first_time(marker, value):
    """Killed by SIGKILL (as by the OOM killer or a node going away) the first time it
    runs, when ``marker`` does not exist yet; ``value`` the next time."""
    import signal

    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return value


class Counter(__import__("hpcexec").Checkpointable):
    """Counts to ``n`` in steps of ``step`` seconds, its count its state; returns the count
    and how many times it was started (its state survives each checkpoint)."""

    def __init__(self):
        self.count = 0
        self.starts = 0

    def __call__(self, n, step):
        self.starts += 1
        while self.count < n:
            time.sleep(step)
            self.count += 1
        return self.count, self.starts


class SlowToLoad(__import__("hpcexec").Checkpointable):
    """A checkpointable callable whose unpickling takes a while: it writes ``marker`` when its
    loading starts (so a test can send the warning while the payload still loads)."""

    def __init__(self, marker, seconds):
        self.marker, self.seconds = marker, seconds

    def __setstate__(self, state):
        self.__dict__.update(state)
        with open(self.marker, "w") as f:
            f.write("loading\n")
        time.sleep(self.seconds)

    def __call__(self):
        time.sleep(30)
        return "ran to its end"


def until_usr1(seconds):
    """Wait up to ``seconds`` for SIGUSR1 (a soft wallclock limit's warning); what came."""
    import signal
    import time

    got = []
    signal.signal(signal.SIGUSR1, lambda *a: got.append("SIGUSR1"))
    end = time.monotonic() + seconds
    while not got and time.monotonic() < end:
        time.sleep(0.1)
    return got[0] if got else "nothing"


def print_index(_):
    """Print and return this job's HPCEXEC_ARRAY_INDEX."""
    import os

    index = os.environ.get("HPCEXEC_ARRAY_INDEX", "")
    print(f"index {index}")
    return index


_CALLS = []


def calls_here():
    """This process's id and how many times it ran this function: a worker keeps both."""
    _CALLS.append(1)
    return os.getpid(), len(_CALLS)
