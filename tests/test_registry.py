"""Which records may move a future along: only those of its own submission."""

from __future__ import annotations

from hpcexec.future import JobFuture
from hpcexec.record import JobRecord
from hpcexec.registry import ANY, UNDECIDED, Registry
from hpcexec.states import JobState


class _Control:
    """A stand-in for the session's control: these futures are never cancelled here."""


def record(rev: int, state: JobState) -> JobRecord:
    return JobRecord(
        key="k", backend="local", host="h", kind="call", jobdir="/j", state=state, rev=rev
    )


def test_a_job_run_again_is_not_ended_by_its_earlier_runs_ending():
    """The monitor may tell an earlier run's end (rev 7, cancelled) while a new submission of
    the same key looks it up and writes its own record: its future must wait for that one."""
    reg = Registry("/cache/jobs.sqlite")
    earlier, again = JobFuture(_Control(), "k"), JobFuture(_Control(), "k")
    reg.watch("k", [earlier])
    reg.watch("k", [again], after=UNDECIDED)
    ended = record(7, JobState.CANCELLED)
    assert reg.of("k", ended) == [earlier]  # still deciding: not the new future's
    reg.decide([again], after=ended.rev)  # it runs the job again, replacing rev 7
    assert reg.of("k", ended) == [earlier]
    assert reg.of("k", record(9, JobState.PENDING)) == [earlier, again]
    assert reg.of("k") == [earlier, again]


def test_futures_attached_to_a_job_take_every_revision():
    reg = Registry("/cache/jobs.sqlite")
    f = JobFuture(_Control(), "k")
    reg.watch("k", [f], after=UNDECIDED)
    reg.decide([f], after=ANY)
    assert reg.of("k", record(0, JobState.COMPLETED)) == [f]
    reg.drop("k", [f])
    assert reg.of("k") == [] and not reg.watching()
