"""A named lock of one cache directory, for work no two holders may do at once (the local
queue's start of jobs): one holder at a time among the client's threads and every process
on the cache. It is ``flock`` on a file beside the store, so a holder that dies releases it.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import CacheError


class CacheLock:
    """The lock file at ``path`` (made on first use, empty)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Threads of this client queue here first: where flock is emulated by POSIX locks
        # (NFS), the locks of one process do not exclude each other.
        self._threads = threading.Lock()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the ``with`` block, waiting for it as long as it takes."""
        with self._threads:
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            try:
                fd = os.open(self.path, flags, 0o600)
            except OSError as e:
                raise CacheError(
                    f"cannot open the lock file {self.path} ({e}): is the cache directory "
                    "still there, and yours?"
                ) from e
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except OSError as e:
                    raise CacheError(
                        f"cannot lock {self.path} ({e}): the cache's filesystem must "
                        "support file locks (as the job store's SQLite file needs too)"
                    ) from e
                yield
            finally:
                os.close(fd)  # releases the flock
