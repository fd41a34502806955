"""How many waiting records may go to a scheduler now: ``max_queued`` and the scheduler's limit
on the jobs a user may have queued, known from accounting or learned from its refusals.

Pure bookkeeping: the submitter tells it what happened (accepted, refused at a limit) with the
count of this client's jobs in the queue, and asks it for room and for the reason records wait.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKOFF_MIN = 15.0  # seconds before the first retry of a refusal none of our own jobs explains
BACKOFF_MAX = 300.0


@dataclass
class SubmitRoom:
    """The room for more jobs of this client in the scheduler's queue.

    ``lower``/``upper`` bound the scheduler's limit on queued jobs as seen by this client: a
    submission of ``k`` jobs accepted with ``q`` queued shows the limit is at least ``q + k``;
    one refused shows it is at most ``q + k - 1``. Between the two, submissions halve the gap
    (a few refused commands, never one per job). Jobs of the same user outside this client count
    against the limit too, so a bound they contradict is dropped and learned again; when no room
    is left and none of this client's jobs ends, one job is tried after a backoff."""

    max_queued: int | None = None
    lower: int | None = None
    upper: int | None = None
    limit_name: str | None = None  # the scheduler's name for the limit last hit
    refused_with: int | None = None  # this client's jobs queued at the last refusal
    retry_at: float | None = None  # when to try one job although no room is known
    backoff: float = BACKOFF_MIN

    def known(self, limit: int, name: str) -> None:
        """The limit as accounting states it (before any refusal)."""
        if self.upper is None and self.lower is None:
            self.lower = self.upper = limit
            self.limit_name = name

    @property
    def capped(self) -> bool:
        """Whether the count of this client's queued jobs matters."""
        return self.max_queued is not None or self.upper is not None

    def allowed(self, queued: int, now: float) -> int | None:
        """How many records may be submitted with ``queued`` of this client's jobs in the
        queue (None: no cap)."""
        caps = []
        if self.max_queued is not None:
            caps.append(self.max_queued - queued)
        if self.upper is not None:
            hi = self.upper - queued
            lo = (self.lower if self.lower is not None else 0) - queued
            room = 0 if hi <= 0 else hi if lo >= hi else max(lo, (hi + 1) // 2)
            if room <= 0 and self.retry_at is not None and now >= self.retry_at:
                room = 1  # jobs outside this client may have left the queue
            caps.append(room)
        return max(0, min(caps)) if caps else None

    def waiting_for(self, queued: int, now: float) -> str:
        """Why records wait with no room: the reason they show."""
        if self.max_queued is not None and queued >= self.max_queued:
            return f"waiting: max_queued={self.max_queued}"
        reason = f"waiting: the scheduler's submit limit ({self.limit_name})"
        if self.refused_with is None:
            return reason
        return f"{reason}; {self.refused_with} of this client's jobs queued when it was hit"

    def accepted(self, size: int, queued: int) -> None:
        """``size`` jobs were submitted with ``queued`` already there."""
        total = queued + size
        if self.upper is not None and total > self.upper:
            self.upper = None  # the limit rose, or others' jobs left: learn it again
        self.lower = max(self.lower or 0, total)
        self.retry_at = None
        self.backoff = BACKOFF_MIN

    def refused(self, size: int, queued: int, name: str, now: float) -> None:
        """``size`` jobs were refused at the limit ``name`` with ``queued`` already there."""
        total = queued + size - 1
        if self.lower is not None and self.lower > total:
            self.lower = None  # others' jobs took room we had: learn it again
        self.lower = max(self.lower or 0, queued)  # those queued fit
        self.upper = total if self.upper is None else min(self.upper, total)
        self.limit_name = name
        self.refused_with = queued
        if size == 1:
            self.retry_at = now + self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)
