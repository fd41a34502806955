"""What joblib runs a Parallel call on inside a job: threads up to the job's CPUs, or sequential."""

from __future__ import annotations

from joblib.parallel import (
    ParallelBackendBase,
    SequentialBackend,
    ThreadingBackend,
    cpu_count,
)


class _JobThreads(ThreadingBackend):
    """Threads inside a job, never more than the CPUs the job may use (joblib's count: the
    process's CPU affinity and cgroup quota, which schedulers set to the allocation)."""

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        return min(super().effective_n_jobs(n_jobs), cpu_count())


def inside_job_backend(nesting_level: int | None) -> ParallelBackendBase:
    """What a ``Parallel`` call naming this backend runs on inside a job, as joblib nests its
    own backends: threads (up to the job's CPUs) at the first level, sequential below."""
    level = nesting_level or 0
    if level > 1:
        return SequentialBackend(nesting_level=level)
    return _JobThreads(nesting_level=level)


def nested_backend(nesting_level: int, cores: int) -> tuple[ParallelBackendBase, int | None]:
    """The backend of a Parallel call nested in a task of a job with ``cores`` cores:
    threads, as many as the cores; sequential in a one-core job."""
    if cores > 1:
        return ThreadingBackend(nesting_level=nesting_level), cores
    return SequentialBackend(nesting_level=nesting_level), None
