"""Progress bars over futures, counting jobs per state."""

from __future__ import annotations

import collections
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future

from tqdm.auto import tqdm


class _Bar:
    def __init__(self, fs: Sequence[Future], desc: str) -> None:
        self.fs = list(fs)
        self._lock = threading.Lock()
        self._bar = tqdm(
            total=len(self.fs), desc=desc, unit="job", file=sys.stderr, dynamic_ncols=True
        )
        self._closed = False
        self._stop = threading.Event()
        for f in self.fs:
            f.add_done_callback(self._done)
        self._ticker = threading.Thread(target=self._tick, daemon=True, name="hpcexec-progress")
        self._ticker.start()

    def _counts(self) -> str:
        counts: collections.Counter[str] = collections.Counter()
        for f in self.fs:
            if f.cancelled():
                counts["cancelled"] += 1
            elif f.done():
                counts["failed" if f.exception() is not None else "done"] += 1
            else:
                state = getattr(f, "seen_state", None)
                counts[
                    state.value if state is not None else ("running" if f.running() else "pending")
                ] += 1
        return " ".join(f"{k}={v}" for k, v in sorted(counts.items()))

    def _done(self, f: Future) -> None:
        with self._lock:
            if not self._closed:
                self._bar.update(1)

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                if self._closed:
                    return
                self._bar.set_postfix_str(self._counts(), refresh=True)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if not self._closed:
                self._bar.set_postfix_str(self._counts(), refresh=False)
                self._closed = True
                self._bar.close()


def attach_bar(fs: Sequence[Future], desc: str = "jobs") -> _Bar:
    """Show a bar that advances as ``fs`` complete, with counts per job state."""
    return _Bar(fs, desc)
