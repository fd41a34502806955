"""Scheduler dialects. Each backend is pure: it renders and parses, it never runs anything.

``SCHEDULERS`` maps a backend name to its class, in the order ``backend="auto"`` tries them.
"""
from __future__ import annotations

from .base import Backend, JobStatus, SchedulerBackend, SubmitSpec
from .local import LocalBackend
from .slurm import SlurmBackend

SCHEDULERS: dict[str, type[SchedulerBackend]] = {
    "slurm": SlurmBackend,
}

__all__ = ["Backend", "JobStatus", "LocalBackend", "SCHEDULERS", "SchedulerBackend",
           "SlurmBackend", "SubmitSpec"]
