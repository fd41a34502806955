"""Scheduler dialects. Each backend is pure: it renders and parses, it never runs anything.

``SCHEDULERS`` maps a backend name to its class, in the order ``backend="auto"`` tries them.
"""
from __future__ import annotations

from .base import Backend, JobStatus, SchedulerBackend, SubmitSpec
from .local import LocalBackend
from .lsf import LsfBackend
from .pbspro import PbsProBackend
from .sge import SgeBackend
from .slurm import SlurmBackend
from .torque import TorqueBackend

SCHEDULERS: dict[str, type[SchedulerBackend]] = {
    "slurm": SlurmBackend,
    "sge": SgeBackend,
    "pbspro": PbsProBackend,
    "torque": TorqueBackend,
    "lsf": LsfBackend,
}

__all__ = ["Backend", "JobStatus", "LocalBackend", "SCHEDULERS", "SchedulerBackend",
           "SlurmBackend", "SubmitSpec"]
