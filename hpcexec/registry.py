"""This client's live futures by job key: the ones its monitor completes.

One lock guards the map. Each future is also counted in the process-wide
:data:`hpcexec.interest.INTEREST` (which decides whether a job may be cancelled), so a
registry is per client while the interest rule spans every client of the process.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence

from .future import JobFuture
from .interest import INTEREST


class Registry:
    """The futures waiting on each job of one cache (``where``: its store's real path)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._lock = threading.RLock()
        self._watch: dict[str, list[JobFuture]] = {}

    def watching(self) -> bool:
        """Whether any future still waits."""
        with self._lock:
            return bool(self._watch)

    def all(self) -> list[JobFuture]:
        """Every future that still waits."""
        with self._lock:
            return [f for fs in self._watch.values() for f in fs]

    def of(self, key: str) -> list[JobFuture]:
        """The futures waiting on job ``key`` (a copy)."""
        with self._lock:
            return list(self._watch.get(key, ()))

    def watch(self, key: str, futures: Sequence[JobFuture]) -> None:
        """Follow ``futures`` of job ``key`` (before any record of it is written or read,
        so no change slips past the monitor)."""
        with self._lock:
            self._watch.setdefault(key, []).extend(futures)
        INTEREST.want(self.where, key, futures)

    def unwatch(self, key: str, futures: Sequence[JobFuture]) -> None:
        """Forget futures that were never handed out (their submission failed)."""
        self.drop(key, futures)
        INTEREST.forget(self.where, key, futures)

    def drop(self, key: str, futures: Sequence[JobFuture]) -> None:
        """Stop following ``futures`` of job ``key`` (about to be completed)."""
        with self._lock:
            mine = self._watch.get(key)
            if mine is None:
                return
            for f in futures:
                if f in mine:
                    mine.remove(f)
            if not mine:
                del self._watch[key]
