"""The monitor: one thread per executor that polls jobs and completes their futures."""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .record import JobRecord
    from .store import Store

log = logging.getLogger(__name__)

BACKOFF = 1.5


class Watched(Protocol):
    """What the monitor polls and tells (its client's :class:`hpcexec.tracker.Tracker`)."""

    store: Store

    def driver_poll(self) -> bool: ...
    def wait_fds(self) -> list[int]: ...
    def wake_in(self) -> float | None: ...
    def watching(self) -> bool: ...
    def records_changed(self, records: Iterable[JobRecord]) -> None: ...
    def monitor_stopped(self) -> None: ...


class Monitor:
    """Polls every unfinished job in one batched pass, backing off from ``interval`` to
    ``cap`` while nothing changes and back to ``interval`` when something does. A failed
    pass is logged and retried; it never fails a job."""

    def __init__(self, watched: Watched, interval: float, cap: float) -> None:
        self.watched = watched
        self.interval = interval
        self.cap = max(cap, interval)
        # A self-pipe wakes the thread; the driver may add fds (pidfds of local jobs) that
        # become readable when a job ends, so an exit is noticed at once, not at the next poll.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop = False
        self._closing = False  # stop once every watched future is done
        self._rev = watched.store.revision()
        self._thread = threading.Thread(target=self._run, name="hpcexec-monitor", daemon=True)
        self._started = False
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if not self._started:
                self._started = True
                self._thread.start()

    def _signal(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):  # already signalled, or closed
            pass

    def wake(self) -> None:
        self.start()
        self._signal()

    def close_when_idle(self) -> None:
        self._closing = True
        self._signal()

    def stop(self, wait: bool = True) -> None:
        self._stop = True
        self._signal()
        if wait and self._started and threading.current_thread() is not self._thread:
            self._thread.join()

    def _wait(self, delay: float) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        for fd in self.watched.wait_fds():
            poller.register(fd, select.POLLIN)
        poller.poll(delay * 1000)
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _run(self) -> None:
        delay = self.interval
        failures = 0
        while not self._stop:
            self._wait(delay)
            if self._stop:
                break
            try:
                changed = self.poll_once()
                failures = 0
            except Exception as e:  # one line each time; the traceback for debugging only
                failures += 1
                log.warning(
                    "polling jobs failed (attempt %d): %s: %s; retrying",
                    failures,
                    type(e).__name__,
                    e,
                )
                log.debug("the failed poll's traceback", exc_info=True)
                changed = False
            delay = self.interval if changed else min(delay * BACKOFF, self.cap)
            soon = self.watched.wake_in()
            if soon is not None:
                delay = min(delay, max(soon, 0.005))
            if self._closing and not self.watched.watching():
                break
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.watched.monitor_stopped()

    def poll_once(self) -> bool:
        """One pass: ask the backend what changed, then complete the futures of the
        records that changed since the last pass."""
        changed = self.watched.driver_poll()
        records = self.watched.store.changed_since(self._rev)
        if records:
            self._rev = max(r.rev for r in records)
            self.watched.records_changed(records)
        return changed or bool(records)
