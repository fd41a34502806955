"""Moving this client's futures along their records: what the monitor thread polls and tells.

A record that changed is matched to the futures waiting on its key (:mod:`hpcexec.registry`);
a started job moves them to running, an ended one (its epilogue settled,
:mod:`hpcexec.epilogues`) completes them with what :mod:`hpcexec.outcomes` makes of it. A job
whose files cannot be reached yet is tried again at the next pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Protocol

from .epilogues import Epilogues
from .future import JobFuture
from .outcomes import Outcomes, ReadAhead, Unreachable
from .record import JobRecord
from .registry import Registry
from .store import Store
from .transport.base import Transport

log = logging.getLogger(__name__)


class Polled(Protocol):
    """What the tracker asks of the driver (the local queue or a scheduler's)."""

    @property
    def wake_in(self) -> float | None: ...  # when the monitor should look again, if sooner

    def poll(self) -> bool: ...
    def wait_fds(self) -> list[int]: ...
    def close(self) -> None: ...


class Tracker:
    """The monitor's client (:class:`hpcexec.monitor.Watched`) for one session."""

    def __init__(
        self,
        store: Store,
        driver: Polled,
        transport: Transport,
        registry: Registry,
        outcomes: Outcomes,
        epilogues: Epilogues,
    ) -> None:
        self.store = store
        self.driver = driver
        self.transport = transport
        self.registry = registry
        self.outcomes = outcomes
        self.epilogues = epilogues
        self._lock = threading.Lock()
        self._reapply: dict[str, JobRecord] = {}  # finished, but their files were unreachable

    def watching(self) -> bool:
        return self.registry.watching()

    def driver_poll(self) -> bool:
        """One pass of the driver; records left over from earlier passes are looked at
        again."""
        changed = self.driver.poll()
        if self._reapply:
            self.records_changed(())
        if self.epilogues.waiting():  # has the client running their epilogue died?
            self.records_changed(self.store.get_many(self.epilogues.take_waiting()).values())
        return changed

    def wait_fds(self) -> list[int]:
        return self.driver.wait_fds()

    def wake_in(self) -> float | None:
        if self._reapply or self.epilogues.waiting():
            return min(self.driver.wake_in or 2.0, 2.0)
        return self.driver.wake_in

    def monitor_stopped(self) -> None:
        self.driver.close()
        self.transport.close()  # reopened if a finished future's files are read later

    def records_changed(self, records: Iterable[JobRecord]) -> None:
        """Move the futures of ``records`` along (called outside any transaction)."""
        with self._lock:
            todo = {**self._reapply, **{rec.key: rec for rec in records}}
            self._reapply.clear()
        watched = [(rec, fs) for rec in todo.values() if (fs := self.registry.of(rec.key, rec))]
        ahead = self.outcomes.read_ahead(
            rec for rec, fs in watched if rec.state.finished and not all(f.done() for f in fs)
        )
        for rec, futures in watched:
            try:
                self._apply(rec, futures, ahead)
            except Unreachable as e:  # the outcome could not be fetched: again next pass
                log.warning("cannot fetch the outcome of %s yet (%s); trying again", rec.key, e)
                with self._lock:
                    self._reapply.setdefault(rec.key, rec)

    def _apply(self, rec: JobRecord, futures: list[JobFuture], ahead: ReadAhead) -> None:
        for f in futures:
            f.note_state(rec.state)
        if not rec.state.finished or not self.epilogues.settled(rec):
            return
        settled = self.outcomes.settle(rec, futures, ahead)
        self.registry.drop(rec.key, futures)
        for f, value, exc, ranks in settled:
            f.settle(value, exc, ranks=ranks)
