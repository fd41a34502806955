"""A future's own moves against the monitor's, which run on another thread."""

from __future__ import annotations

import concurrent.futures as cf
import threading

import pytest

from hpcexec.future import JobFuture
from hpcexec.states import JobState


class _CancelRacedByMonitor:
    """A control whose cancel lets the monitor see the job cancelled before it returns: the
    monitor's thread reads the record the cancel has just written, as it may at any time."""

    def __init__(self, monitor_does: str) -> None:
        self.monitor_does = monitor_does
        self.monitor: threading.Thread | None = None

    def cancel(self, future: JobFuture) -> bool:
        if self.monitor_does == "note":
            act = lambda: future.note_state(JobState.CANCELLED)  # noqa: E731
        else:
            act = lambda: future.settle(exc=RuntimeError("cancelled by the scheduler"))  # noqa: E731
        self.monitor = threading.Thread(target=act)
        self.monitor.start()
        self.monitor.join(0.3)  # the monitor goes first where nothing stops it
        return True


@pytest.mark.parametrize("monitor_does", ["note", "settle"])
def test_cancel_is_not_undone_by_the_monitor_seeing_the_cancelled_job(monitor_does):
    """Seen in CI (a held job on the fake LSF): the monitor read the record cancel() had
    just written and moved the future to running, so cancel() answered False for a job it
    had cancelled and result() raised JobFailed instead of CancelledError."""
    control = _CancelRacedByMonitor(monitor_does)
    f = JobFuture(control, "k")  # type: ignore[arg-type]
    assert f.cancel() is True
    assert control.monitor is not None
    control.monitor.join(5)
    assert not control.monitor.is_alive()  # the monitor went on once cancel() decided
    assert f.cancelled()
    with pytest.raises(cf.CancelledError):
        f.result(timeout=0)


class _CancelRefused:
    def cancel(self, future: JobFuture) -> bool:
        return False  # the job started meanwhile


def test_a_refused_cancel_leaves_the_monitor_free_to_move_the_future():
    f = JobFuture(_CancelRefused(), "k")  # type: ignore[arg-type]
    assert f.cancel() is False
    f.note_state(JobState.RUNNING)
    assert f.running()
    f.settle(21)
    assert f.result(timeout=0) == 21
