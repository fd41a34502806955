""":func:`hpcexec.wait`: :func:`concurrent.futures.wait` over job futures, submitting what
still gathers first, with an optional progress bar."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable

from .future import JobFuture


def wait(
    fs: Iterable[concurrent.futures.Future],
    timeout: float | None = None,
    return_when: str = concurrent.futures.ALL_COMPLETED,
    *,
    progress: bool = False,
) -> concurrent.futures._base.DoneAndNotDoneFutures:
    """:func:`concurrent.futures.wait`, with an optional progress bar counting jobs per state."""
    fs = list(fs)
    waiting = next((f for f in fs if isinstance(f, JobFuture) and not f.done()), None)
    if waiting is not None:  # submits what gathers in its client (one look at the store)
        waiting.hurry()
    if not progress:
        return concurrent.futures.wait(fs, timeout, return_when)
    from .progress import attach_bar

    bar = attach_bar(fs, desc="jobs")
    try:
        return concurrent.futures.wait(fs, timeout, return_when)
    finally:
        bar.close()
