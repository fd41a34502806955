"""The monitor: one thread per executor that polls jobs and completes their futures."""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .executor import _Core

log = logging.getLogger(__name__)

BACKOFF = 1.5


class Monitor:
    """Polls every unfinished job in one batched pass, backing off from ``interval`` to
    ``cap`` while nothing changes and back to ``interval`` when something does. A failed
    pass is logged and retried; it never fails a job."""

    def __init__(self, core: _Core, interval: float, cap: float) -> None:
        self.core = core
        self.interval = interval
        self.cap = max(cap, interval)
        self._wake = threading.Event()
        self._stop = False
        self._closing = False  # stop once every watched future is done
        self._rev = core.store.revision()
        self._thread = threading.Thread(target=self._run, name="hpcexec-monitor", daemon=True)
        self._started = False
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if not self._started:
                self._started = True
                self._thread.start()

    def wake(self) -> None:
        self.start()
        self._wake.set()

    def close_when_idle(self) -> None:
        self._closing = True
        self._wake.set()

    def stop(self, wait: bool = True) -> None:
        self._stop = True
        self._wake.set()
        if wait and self._started and threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        delay = self.interval
        failures = 0
        while not self._stop:
            self._wake.wait(delay)
            self._wake.clear()
            if self._stop:
                break
            try:
                changed = self.poll_once()
                failures = 0
            except Exception:
                failures += 1
                log.warning("polling jobs failed (attempt %d); retrying", failures, exc_info=True)
                changed = False
            delay = self.interval if changed else min(delay * BACKOFF, self.cap)
            if self._closing and not self.core.watching():
                break

    def poll_once(self) -> bool:
        """One pass: ask the backend what changed, then complete the futures of the
        records that changed since the last pass."""
        changed = self.core.driver_poll()
        records = self.core.store.changed_since(self._rev)
        if records:
            self._rev = max(r.rev for r in records)
            self.core.records_changed(records)
        return changed or bool(records)
