"""The driver interface: both queues implement it, and the rules they share are one."""
from __future__ import annotations

import inspect

import pytest

from hpcexec import JobFailed, JobState
from hpcexec.backends import SCHEDULERS, LocalBackend
from hpcexec.driver import NEVER_RAN, Driver, dependency_failed
from hpcexec.jobfiles import killed_by, signal_of
from hpcexec.localqueue import LocalQueue
from hpcexec.schedqueue import SchedulerQueue
from hpcexec.store import JobRecord, Store
from hpcexec.transport.local import LocalShell

DRIVERS = {
    "local": lambda store, shell, tmp: LocalQueue(store, shell, LocalBackend(2), "/no/key"),
    "slurm": lambda store, shell, tmp: SchedulerQueue(store, shell, SCHEDULERS["slurm"](),
                                                      str(tmp)),
}


@pytest.fixture(params=sorted(DRIVERS))
def driver(request, tmp_path):
    (tmp_path / "cache").mkdir()
    store = Store(tmp_path / "cache")
    yield DRIVERS[request.param](store, LocalShell(), tmp_path)
    store.close()


def test_both_queues_are_complete_drivers(driver):
    assert isinstance(driver, Driver)
    assert not inspect.isabstract(type(driver))
    # What the session and the monitor call is declared once, on Driver.
    for name in ("poll", "wait_fds", "close", "accounting", "preview", "cancel",
                 "terminate", "hold", "release", "suspend", "resume"):
        assert callable(getattr(driver, name)), name
        assert hasattr(Driver, name), name
    assert driver.wake_in is None  # nothing waits for a time yet


def _rec(key: str, state: JobState, deps=(), job_id=None) -> JobRecord:
    return JobRecord(key=key, backend="x", host="h", kind="shell", state=state,
                     jobdir=f"/j/{key}", deps=list(deps), job_id=job_id)


def test_a_failed_or_missing_dependency_cancels_the_job_with_the_reason(driver):
    with driver.store.write() as tx:
        for rec in (_rec("ok", JobState.COMPLETED), _rec("bad", JobState.FAILED),
                    _rec("run", JobState.RUNNING, job_id="7"),
                    _rec("a", JobState.PENDING, ["ok", "run"]),
                    _rec("b", JobState.PENDING, ["ok", "bad", "run"]),
                    _rec("c", JobState.PENDING, ["gone"])):
            tx.put(rec)
    get = driver.store.get
    assert [d.key for d in driver.dependencies(get("a"))] == ["run"]  # waits for one
    assert driver.dependencies(get("b")) is None
    with driver.store.write() as tx:  # the same rule inside a transaction
        assert driver.dependencies(tx.get("c"), tx) is None
    assert (get("b").state, get("b").reason) == (
        JobState.CANCELLED, f"dependency bad ended failed; {NEVER_RAN}")
    assert (get("c").state, get("c").reason) == (
        JobState.CANCELLED, f"dependency gone is not in the cache; {NEVER_RAN}")
    assert get("a").state is JobState.PENDING and get("b").finished


def test_dependency_failed_says_why_or_none():
    assert dependency_failed("d", None) == f"dependency d is not in the cache; {NEVER_RAN}"
    for state in (JobState.CANCELLED, JobState.TIMEOUT, JobState.LOST):
        assert dependency_failed("d", _rec("d", state)) == (
            f"dependency d ended {state.value}; {NEVER_RAN}")
    for state in (JobState.COMPLETED, JobState.PENDING, JobState.RUNNING, JobState.HELD):
        assert dependency_failed("d", _rec("d", state)) is None


def test_exit_code_128_plus_n_means_signal_n():
    assert [signal_of(c) for c in (None, 0, 1, 127, 128)] == [None] * 5
    assert (signal_of(129), signal_of(137), signal_of(143)) == (1, 9, 15)
    assert killed_by(signal_of(137)).startswith("killed by SIGKILL")


def test_a_failed_dependency_cancels_its_dependents_locally(ex):
    first = ex.submit_shell("exit 3")
    with pytest.raises(JobFailed):
        first.result(timeout=30)
    second = ex.options(after=first).submit_shell("echo never")
    with pytest.raises(JobFailed) as info:
        second.result(timeout=30)
    assert info.value.state is JobState.CANCELLED and second.job_id is None
    assert info.value.reason == f"dependency {first.key} ended failed; {NEVER_RAN}"


def test_a_job_exiting_128_plus_n_reads_as_killed_by_signal_n_locally(ex):
    with pytest.raises(JobFailed) as info:
        ex.submit_shell("exit 143").result(timeout=30)
    assert (info.value.exit_code, info.value.signal) == (143, 15)
