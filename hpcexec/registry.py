"""This client's live futures by job key: the ones its monitor completes.

A future takes only the records of its own submission: one whose submission runs a job again
(a failed or cancelled one, say) must not be completed by the earlier run's ending, which the
monitor may still be telling. So a future is watched first *undecided* (no record settles it
while its submission looks the job up and writes the new record), then told which revisions
are its own: those above the record it replaced (:data:`ANY`: every one).

One lock guards the map. Each future is also counted in the process-wide
:data:`hpcexec.interest.INTEREST` (which decides whether a job may be cancelled), so a
registry is per client while the interest rule spans every client of the process.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from .future import JobFuture
from .interest import INTEREST
from .record import JobRecord

ANY = -1  # a future that takes every revision of its job's record
UNDECIDED = None  # a future whose submission has not yet said which revisions are its own


class Registry:
    """The futures waiting on each job of one cache (``where``: its store's real path)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._lock = threading.RLock()
        self._watch: dict[str, list[JobFuture]] = {}
        self._after: dict[JobFuture, int | None] = {}  # revisions above this are its own

    def watching(self) -> bool:
        """Whether any future still waits."""
        with self._lock:
            return bool(self._watch)

    def all(self) -> list[JobFuture]:
        """Every future that still waits."""
        with self._lock:
            return [f for fs in self._watch.values() for f in fs]

    def of(self, key: str, rec: JobRecord | None = None) -> list[JobFuture]:
        """The futures waiting on job ``key`` (a copy); with ``rec``, only those that
        ``rec`` may move along (its revision is of their submission)."""
        with self._lock:
            futures = list(self._watch.get(key, ()))
            if rec is None:
                return futures
            return [
                f
                for f in futures
                if (after := self._after.get(f, ANY)) is not UNDECIDED and rec.rev > after
            ]

    def watch(self, key: str, futures: Sequence[JobFuture], after: int | None = ANY) -> None:
        """Follow ``futures`` of job ``key`` (before any record of it is written or read,
        so no change slips past the monitor), taking the revisions above ``after``
        (:data:`UNDECIDED`: none until :meth:`decide`)."""
        with self._lock:
            self._watch.setdefault(key, []).extend(futures)
            self._after.update((f, after) for f in futures)
        INTEREST.want(self.where, key, futures)

    def decide(self, futures: Sequence[JobFuture], after: int) -> None:
        """Let ``futures`` take the revisions of their record above ``after``."""
        with self._lock:
            self._after.update((f, after) for f in futures if f in self._after)

    def unwatch(self, key: str, futures: Sequence[JobFuture]) -> None:
        """Forget futures that were never handed out (their submission failed)."""
        self.drop(key, futures)

    def drop(self, key: str, futures: Sequence[JobFuture]) -> None:
        """Stop following ``futures`` of job ``key`` (completed, or never handed out); they
        no longer count as wanting the job either."""
        gone = set(futures)
        with self._lock:
            mine = self._watch.get(key)
            if mine is not None:
                mine[:] = [f for f in mine if f not in gone]
                if not mine:
                    del self._watch[key]
            for f in gone:
                self._after.pop(f, None)
        INTEREST.forget(self.where, key, gone)
