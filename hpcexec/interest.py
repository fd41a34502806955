"""Which live futures of this process want each job.

Identical calls, the calls of one chunked ``map`` job, and futures from :meth:`attach` share
one job. A job is cancelled (or terminated) on behalf of one of its futures only when no
other live future of this process still wants it; this registry, shared by every Executor of
the process, is what decides that. Another process's futures on the same cache cannot be
known cheaply, so they do not count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .future import JobFuture

_Where = tuple[str, str]  # (the cache's store, the job's key)


class Interest:
    """The live futures of this process for each job, by cache and key. A future stops
    wanting its job when it is done or withdraws."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._wanted: dict[_Where, set[JobFuture]] = {}

    def want(self, store: str, key: str, futures: Iterable[JobFuture]) -> None:
        """Count ``futures`` as wanting job ``key`` of the cache whose store is ``store``
        until they are forgotten (a client forgets the futures it stops following); a future
        that is done no longer counts meanwhile."""
        with self._lock:
            self._wanted.setdefault((store, key), set()).update(futures)

    def forget(self, store: str, key: str, futures: Iterable[JobFuture]) -> None:
        """Stop counting ``futures`` (done, or never handed out)."""
        where = (store, key)
        with self._lock:
            wanting = self._wanted.get(where)
            if wanting is None:
                return
            wanting.difference_update(futures)
            if not wanting:
                del self._wanted[where]

    def withdraw(
        self, store: str, key: str, future: JobFuture, end: Callable[[], bool]
    ) -> bool | None:
        """Take ``future``'s interest in job ``key`` back. When no other live future of this
        process wants the job, ``end`` (cancel or terminate it) is called, under the lock so
        that no future can start wanting the job meanwhile, and its answer returned; the
        interest stays if ``end`` fails. None when other futures still want the job: it is
        left alone."""
        where = (store, key)
        with self._lock:
            others = [g for g in self._wanted.get(where, ()) if g is not future and not g.done()]
            if others:
                self.forget(store, key, [future])
                return None
            ended = end()
            if ended:
                self.forget(store, key, [future])
            return ended


INTEREST = Interest()
"""The registry of this process (one for every Executor in it)."""
