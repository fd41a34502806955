"""The driver interface: both queues implement it, and the rules they share are one."""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from types import SimpleNamespace

import pytest

from hpcexec import JobFailed, JobState, schedqueue, schedsubmit
from hpcexec.backends import SCHEDULERS, LocalBackend
from hpcexec.driver import NEVER_RAN, Driver, dependency_failed
from hpcexec.errors import SchedulerOutputError, TransportError
from hpcexec.jobfiles import killed_by, signal_of
from hpcexec.layout import EXITCODE
from hpcexec.localqueue import LocalQueue
from hpcexec.record import JobRecord
from hpcexec.schedqueue import (
    EARLY_POLL,
    PEEK_EVERY,
    PEEKS,
    REASK_EVERY,
    REMOTE_PEEKS,
    SchedulerQueue,
)
from hpcexec.schedrecover import SUBMITTING
from hpcexec.schedstatus import REASKS
from hpcexec.slots import CLAIMS
from hpcexec.store import Store
from hpcexec.transport.base import CommandResult
from hpcexec.transport.local import LocalShell

DRIVERS = {
    "local": lambda store, shell, tmp: LocalQueue(store, shell, LocalBackend(2), "/no/key"),
    "slurm": lambda store, shell, tmp: SchedulerQueue(
        store, shell, SCHEDULERS["slurm"](), str(tmp)
    ),
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
    for name in (
        "poll",
        "wait_fds",
        "close",
        "accounting",
        "preview",
        "cancel",
        "terminate",
        "hold",
        "release",
        "suspend",
        "resume",
    ):
        assert callable(getattr(driver, name)), name
        assert hasattr(Driver, name), name
    assert driver.wake_in is None  # nothing waits for a time yet


def _rec(key: str, state: JobState, deps=(), job_id=None) -> JobRecord:
    return JobRecord(
        key=key,
        backend="x",
        host="h",
        kind="shell",
        state=state,
        jobdir=f"/j/{key}",
        deps=list(deps),
        job_id=job_id,
    )


def test_a_failed_or_missing_dependency_cancels_the_job_with_the_reason(driver):
    with driver.store.write() as tx:
        for rec in (
            _rec("ok", JobState.COMPLETED),
            _rec("bad", JobState.FAILED),
            _rec("run", JobState.RUNNING, job_id="7"),
            _rec("a", JobState.PENDING, ["ok", "run"]),
            _rec("b", JobState.PENDING, ["ok", "bad", "run"]),
            _rec("c", JobState.PENDING, ["gone"]),
        ):
            tx.put(rec)
    get = driver.store.get
    assert [d.key for d in driver.dependencies(get("a"))] == ["run"]  # waits for one
    assert driver.dependencies(get("b")) is None
    with driver.store.write() as tx:  # the same rule inside a transaction
        assert driver.dependencies(tx.get("c"), tx) is None
    assert (get("b").state, get("b").reason) == (
        JobState.CANCELLED,
        f"dependency bad ended failed; {NEVER_RAN}",
    )
    assert (get("c").state, get("c").reason) == (
        JobState.CANCELLED,
        f"dependency gone is not in the cache; {NEVER_RAN}",
    )
    assert get("a").state is JobState.PENDING and get("b").finished


def test_dependency_failed_says_why_or_none():
    assert dependency_failed("d", None) == f"dependency d is not in the cache; {NEVER_RAN}"
    for state in (JobState.CANCELLED, JobState.TIMEOUT, JobState.LOST):
        assert dependency_failed("d", _rec("d", state)) == (
            f"dependency d ended {state.value}; {NEVER_RAN}"
        )
    for state in (JobState.COMPLETED, JobState.PENDING, JobState.RUNNING, JobState.HELD):
        assert dependency_failed("d", _rec("d", state)) is None


def test_exit_code_128_plus_n_means_signal_n():
    assert [signal_of(c) for c in (None, 0, 1, 127, 128)] == [None] * 5
    assert (signal_of(129), signal_of(137), signal_of(143)) == (1, 9, 15)
    assert killed_by(signal_of(137)).startswith("killed by SIGKILL")


def failed_dependency_cancels_its_dependents(ex) -> None:
    """The dependency rule, as every driver applies it (also run on the fake schedulers)."""
    first = ex.submit_shell("exit 3")
    with pytest.raises(JobFailed):
        first.result(timeout=30)
    second = ex.options(after=first).submit_shell("echo never")
    with pytest.raises(JobFailed) as info:
        second.result(timeout=30)
    assert info.value.state is JobState.CANCELLED and second.job_id is None
    assert info.value.reason == f"dependency {first.key} ended failed; {NEVER_RAN}"


def exit_128_plus_n_reads_as_signal_n(ex) -> None:
    """128+n means killed by signal n, for every driver (also run on the fake schedulers)."""
    with pytest.raises(JobFailed) as info:
        ex.submit_shell("exit 143").result(timeout=30)
    assert (info.value.exit_code, info.value.signal) == (143, 15)


def test_a_failed_dependency_cancels_its_dependents_locally(ex):
    failed_dependency_cancels_its_dependents(ex)


def test_a_job_exiting_128_plus_n_reads_as_killed_by_signal_n_locally(ex):
    exit_128_plus_n_reads_as_signal_n(ex)


# -- a scheduler's unreadable answer is not a dropped connection, and vice versa ---------
class Scripted(LocalShell):
    """Runs nothing: each command name answers with the next scripted result, or raises it."""

    def __init__(self, answers):
        super().__init__()
        self.answers = answers  # command name -> list of (rc, stdout) or exceptions
        self.ran: list[str] = []

    def run(self, argv, *, input=None, timeout=60.0, idempotent=False):
        self.ran.append(argv[0])
        answer = self.answers[argv[0]].pop(0)
        if isinstance(answer, Exception):
            raise answer
        rc, out = answer
        return CommandResult(tuple(argv), rc, out, "" if rc == 0 else out)


def _slurm(tmp_path, answers, *recs: JobRecord, peeks: int = 0):
    (tmp_path / "cache").mkdir()
    store = Store(tmp_path / "cache")
    shell = Scripted(answers)
    with store.write() as tx:
        for rec in recs:
            rec.backend, rec.host = "slurm", shell.host
            tx.put(rec)
    backend = SCHEDULERS["slurm"]()
    return store, shell, SchedulerQueue(store, shell, backend, str(tmp_path), peeks=peeks)


def test_an_unreadable_status_is_logged_and_the_next_poll_reads_it(tmp_path, caplog):
    store, _shell, queue = _slurm(
        tmp_path,
        {"squeue": [(0, "slurm_load_jobs: garbled \x00\n"), (0, "12|RUNNING|None|vm|\n")]},
        _rec("k", JobState.PENDING, job_id="12"),
    )
    caplog.set_level(logging.WARNING, logger="hpcexec.schedqueue")
    assert queue.poll() is False  # no exception: the monitor is not told the poll failed
    [line] = [r.getMessage() for r in caplog.records]
    assert (
        line.startswith(
            "cannot read slurm's job status this time: squeue printed an unreadable line"
        )
        and "\n" not in line
    )
    assert store.get("k").state is JobState.PENDING  # kept, not judged gone
    assert queue.poll() is True and store.get("k").state is JobState.RUNNING


def test_a_dropped_connection_while_polling_is_left_to_the_monitor(tmp_path, caplog):
    store, _shell, queue = _slurm(
        tmp_path,
        {"squeue": [TransportError("connection dropped")]},
        _rec("k", JobState.PENDING, job_id="12"),
    )
    caplog.set_level(logging.WARNING, logger="hpcexec.schedqueue")
    with pytest.raises(TransportError, match="connection dropped"):
        queue.poll()
    assert store.get("k").state is JobState.PENDING
    assert not [r for r in caplog.records if "cannot read" in r.getMessage()]


@pytest.mark.parametrize(
    "answer, error",
    [
        ((1, "slurm_load_jobs error: Unable to contact slurm controller"), SchedulerOutputError),
        (TransportError("connection dropped"), TransportError),
    ],
)
def test_a_submission_to_recover_waits_for_a_usable_list_of_queued_jobs(tmp_path, answer, error):
    rec = _rec("k", JobState.PENDING)
    rec.reason = SUBMITTING + "/arrays/x/submit.sh"
    store, shell, queue = _slurm(tmp_path, {"squeue": [answer]}, rec)
    with pytest.raises(error) as info:
        queue.poll()
    assert error is TransportError or not isinstance(info.value, TransportError)
    assert shell.ran == ["squeue"]  # nothing submitted again
    assert store.get("k").reason == rec.reason  # the intent stays for the next poll


# -- a fresh job's end, seen from its exit-code file between status commands ----------------
def _fresh_jobs(tmp_path, peeks: int, then: str = "RUNNING"):
    """Two running jobs just submitted (the status said so once), then both end: ``ok``
    writes exit code 0, ``bad`` exit code 1; the status asked next lists ``ok`` as ``then``."""
    recs = [_rec(k, JobState.PENDING, job_id=i) for k, i in (("ok", "12"), ("bad", "13"))]
    for rec in recs:
        rec.jobdir = str(tmp_path / rec.key)
        os.mkdir(rec.jobdir)
    running = (0, "12|RUNNING|None|vm|\n13|RUNNING|None|vm|\n")
    later = (0, f"12|{then}|None|vm|0:0\n13|RUNNING|None|vm|\n")
    store, shell, queue = _slurm(tmp_path, {"squeue": [running, later]}, *recs, peeks=peeks)
    queue.submitter.last_submitted = time.time()
    assert queue.poll() is True and store.get("ok").state is JobState.RUNNING
    (tmp_path / "ok" / EXITCODE).write_text("0\n\n")
    (tmp_path / "bad" / EXITCODE).write_text("1\n\n")
    return store, shell, queue


def test_a_fresh_job_whose_exit_code_file_says_0_is_asked_about_at_once_and_completes(tmp_path):
    store, shell, queue = _fresh_jobs(tmp_path, PEEKS)
    started = store.get("ok").started  # when the status saw it running
    assert queue.wake_in == PEEK_EVERY  # its file is read again this soon
    # the file says 0: the status is asked now, not at the end of its interval, and a job it
    # still lists as running (its end not reported yet) is completed by its file
    assert queue.poll() is True and shell.ran == ["squeue", "squeue"]
    ok = store.get("ok")
    assert (ok.state, ok.exit_code, ok.started) == (JobState.COMPLETED, 0, started)
    # a failure is the scheduler's to explain (a memory kill, a requeue): it waits for it
    assert store.get("bad").state is JobState.RUNNING
    assert queue.poll() is False and shell.ran == ["squeue", "squeue"]


@pytest.mark.parametrize(
    "then, state",
    [
        ("CANCELLED", JobState.CANCELLED),
        ("COMPLETING", JobState.RUNNING),
        ("PENDING", JobState.PENDING),  # requeued: its new run will say how it ends
    ],
)
def test_a_job_the_scheduler_lists_as_ending_is_judged_by_it_not_by_its_file(tmp_path, then, state):
    # scancel'd, a program that ends cleanly on SIGTERM (a Dask worker) exits 0: the job was
    # cancelled all the same; while SLURM lists it COMPLETING, how it ended is not known yet
    store, shell, queue = _fresh_jobs(tmp_path, PEEKS, then=then)
    assert queue.poll() is (state is not JobState.RUNNING)  # a change of state, or none
    assert shell.ran == ["squeue", "squeue"]
    assert store.get("ok").state is state
    assert queue.poll() is False and shell.ran == ["squeue", "squeue"]  # not asked again


def test_a_job_listed_completing_after_its_file_said_0_is_asked_about_again_soon(
    tmp_path, monkeypatch
):
    # SLURM lists a job COMPLETING for a fraction of a second after it exits: its end is
    # asked again every REASK_EVERY s (at most REASKS times), not at the next interval
    store, shell, queue = _fresh_jobs(tmp_path, PEEKS, then="COMPLETING")
    now = time.time()
    monkeypatch.setattr(schedqueue, "time", SimpleNamespace(time=lambda: now))
    assert queue.poll() is False and store.get("ok").state is JobState.RUNNING
    completing = (0, "12|COMPLETING|None|vm|0\n13|RUNNING|None|vm|\n")
    ended = (0, "12|COMPLETED|None|vm|0:0\n13|RUNNING|None|vm|\n")
    shell.answers["squeue"] += [completing] * REASKS + [ended]
    asked = []
    for _ in range(REASKS):
        assert queue.poll() is False  # not due yet: no command
        now += REASK_EVERY + 0.001
        queue.poll()
        asked.append(shell.ran.count("squeue"))
    assert asked == list(range(3, REASKS + 3))
    now += REASK_EVERY + 0.001
    assert queue.poll() is False and shell.ran.count("squeue") == REASKS + 2  # back to
    now += EARLY_POLL  # the early interval
    assert queue.poll() is True and store.get("ok").state is JobState.COMPLETED


def test_job_files_on_another_host_are_peeked_at_less_often(tmp_path):
    store, shell, queue = _fresh_jobs(tmp_path, REMOTE_PEEKS)  # over SSH: round trips each
    assert queue.wake_in == EARLY_POLL / REMOTE_PEEKS
    assert queue.poll() is True and shell.ran == ["squeue", "squeue"]
    assert store.get("ok").state is JobState.COMPLETED


def test_job_files_the_scheduler_writes_after_the_job_are_not_peeked_at(tmp_path):
    store, shell, queue = _fresh_jobs(tmp_path, 0)  # PBS, LSF: output delivered at the end
    assert queue.wake_in == EARLY_POLL
    assert queue.poll() is False and shell.ran == ["squeue", "squeue"]
    assert store.get("ok").state is JobState.RUNNING  # as the status says, until it ends


def test_a_peeked_task_of_a_shared_array_names_the_element_that_ran_it(tmp_path):
    rec = _rec("t", JobState.PENDING, job_id="12_1")
    rec.jobdir, rec.array_index = str(tmp_path / "t"), 1
    rec.resources = {"array_dir": str(tmp_path / "array")}
    os.makedirs(tmp_path / "array" / CLAIMS)
    os.mkdir(rec.jobdir)
    answers = [(0, "12_1|PENDING|None||\n"), (0, "12_0|RUNNING|None|vm|\n")]
    store, shell, queue = _slurm(
        tmp_path, {"squeue": answers, "scancel": [(0, "")]}, rec, peeks=PEEKS
    )
    queue.submitter.last_submitted = time.time()
    queue.poll()
    # element 12_0 took task 1 before its own element started, and ran it
    (tmp_path / "array" / CLAIMS / "1@12_0").write_text("")
    (tmp_path / "t" / EXITCODE).write_text("0\n\n")
    assert queue.poll() is True
    assert shell.ran == ["squeue", "squeue", "scancel"]  # its own element need not start
    t = store.get("t")
    assert (t.state, t.job_id) == (JobState.COMPLETED, "12_0")


def test_the_status_is_asked_at_a_quarter_of_the_age_of_a_submission_for_20_s(
    tmp_path, monkeypatch
):
    # a job of a few seconds is seen at most 25 % late, not at the monitor's backed-off
    # interval once the first seconds are over
    _store, _shell, queue = _slurm(tmp_path, {}, _rec("k", JobState.RUNNING, job_id="12"))
    now = 1000.0
    monkeypatch.setattr(schedqueue, "time", SimpleNamespace(time=lambda: now))
    assert queue.wake_in is None  # nothing submitted yet
    queue.submitter.last_submitted = now
    ages = (0.5, 2.0, 8.0, 19.0, 21.0)
    wanted = []
    for age in ages:
        now = 1000.0 + age
        wanted.append(queue.wake_in)
    assert wanted == [0.2, 0.5, 2.0, 4.75, None]


def test_a_job_completed_by_its_file_counts_as_queued_until_the_scheduler_lists_it_ended(
    tmp_path,
):
    # SLURM counts a job against MaxSubmit until it has ended there: a client that forgot it
    # would submit past a limit it knows
    store, shell, queue = _fresh_jobs(tmp_path, PEEKS)
    assert queue.poll() is True and store.get("ok").state is JobState.COMPLETED
    assert queue.status.lingering == {"ok": "12"}
    shell.answers["squeue"] += [
        (0, "12|COMPLETING|None|vm|0\n13|RUNNING|None|vm|\n"),
        (0, "12|COMPLETED|None|vm|0:0\n13|RUNNING|None|vm|\n"),
    ]
    queue.status.refresh()
    assert queue.status.lingering == {"ok": "12"}  # still listed: still counted
    queue.status.refresh()
    assert queue.status.lingering == {}


# -- what a large submission needs from the scheduler, asked while its files are staged -------
class SideBySide(Scripted):
    """Answers the limit query (``sh -c 'sacctmgr ...'``) only once the array size query
    (``scontrol``) has started: they are asked side by side, or the limit query times out."""

    def __init__(self, answers):
        super().__init__(answers)
        self.sizes_asked = threading.Event()
        self.together = False

    def run(self, argv, *, input=None, timeout=60.0, idempotent=False):
        if argv[0] == "scontrol":
            self.sizes_asked.set()
        elif argv[0] == "sh":
            self.together = self.sizes_asked.wait(10)
        return super().run(argv, input=input, timeout=timeout, idempotent=idempotent)


LIMITS = "||hx_rec10,normal\n-- qos\nnormal|\nhx_rec10|10\n"  # as in test_submit_limits.py


def _asked(shell, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(shell.ran) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_large_submission_asks_the_schedulers_limits_ahead_side_by_side(tmp_path):
    """Over a slow link each query is a round trip, and sacctmgr takes 0.3 s: they were asked
    one after the other, by the monitor, after the jobs' files were staged."""
    (tmp_path / "cache").mkdir()
    store = Store(tmp_path / "cache")
    answers = {"sh": [(0, LIMITS)], "scontrol": [(0, "MaxArraySize = 41\n")]}
    shell = SideBySide(answers)
    queue = SchedulerQueue(store, shell, SCHEDULERS["slurm"](), str(tmp_path))
    queue.expect(schedsubmit.FEW_JOBS + 1)  # no poll: asked by expect alone
    _asked(shell, 2)
    assert sorted(shell.ran) == ["scontrol", "sh"] and shell.together
    # what the submission then reads is those answers, not asked again (no answer is left)
    assert queue.commands.submit_limit() == LIMITS
    assert queue.commands.max_array() == SCHEDULERS["slurm"]().parse_max_array("MaxArraySize = 41")
    assert sorted(shell.ran) == ["scontrol", "sh"]


def test_a_few_jobs_ask_nothing_ahead(tmp_path):
    _store, shell, queue = _slurm(tmp_path, {})
    queue.expect(schedsubmit.FEW_JOBS)
    time.sleep(0.2)
    assert shell.ran == []


# -- a status pass over shared arrays ----------------------------------------------------------
class ClaimsBeside(Scripted):
    """Lists a directory only once ``squeue`` has started (else after 5 s): the claims of
    shared arrays are read beside the status command, or the pass takes 5 s longer."""

    def __init__(self, answers):
        super().__init__(answers)
        self.asked = threading.Event()
        self.beside: list[bool] = []

    def run(self, argv, *, input=None, timeout=60.0, idempotent=False):
        self.asked.set()
        return super().run(argv, input=input, timeout=timeout, idempotent=idempotent)

    def list_dirs(self, paths):
        self.beside.append(self.asked.wait(5))
        return super().list_dirs(paths)


def _shared_task(tmp_path, job_id="12_1"):
    rec = _rec("t", JobState.RUNNING, job_id=job_id)
    rec.jobdir, rec.array_index = str(tmp_path / "t"), 1
    rec.resources = {"array_dir": str(tmp_path / "array")}
    os.makedirs(tmp_path / "array" / CLAIMS)
    os.mkdir(rec.jobdir)
    return rec


def test_the_claims_of_shared_arrays_are_read_beside_the_status_command(tmp_path):
    """Over SSH the claims take three round trips and squeue one: they were read first, then
    the status asked, on every pass while a shared array ran."""
    rec = _shared_task(tmp_path)
    (tmp_path / "cache").mkdir()
    store = Store(tmp_path / "cache")
    shell = ClaimsBeside({"squeue": [(0, "12_1|RUNNING|None|vm|\n")]})
    rec.backend, rec.host = "slurm", shell.host
    with store.write() as tx:
        tx.put(rec)
    queue = SchedulerQueue(store, shell, SCHEDULERS["slurm"](), str(tmp_path))
    queue.poll()
    assert shell.beside == [True] and shell.ran == ["squeue"]


def test_an_element_the_claims_name_that_the_status_did_not_list_is_asked_about(tmp_path):
    rec = _shared_task(tmp_path)
    (tmp_path / "array" / CLAIMS / "1@12_7").write_text("")  # element 12_7 runs task 1
    answers = [(0, "12_1|RUNNING|None|vm|\n"), (0, "12_7|RUNNING|None|vm|\n")]
    store, shell, queue = _slurm(tmp_path, {"squeue": answers}, rec)
    queue.poll()
    assert shell.ran == ["squeue", "squeue"]
    t = store.get("t")
    assert (t.state, t.job_id) == (JobState.RUNNING, "12_7")
