"""The one set of job states every backend maps its own codes onto."""

from __future__ import annotations

from enum import Enum


class JobState(str, Enum):
    PENDING = "pending"
    HELD = "held"
    RUNNING = "running"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    LOST = "lost"

    @property
    def finished(self) -> bool:
        return self in FINAL_STATES

    @property
    def started(self) -> bool:
        """True once the job has begun running (or ended)."""
        return self in (JobState.RUNNING, JobState.SUSPENDED) or self.finished

    def __str__(self) -> str:
        return self.value


FINAL_STATES = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT, JobState.LOST}
)
ACTIVE_STATES = frozenset(set(JobState) - FINAL_STATES)
