"""Separate submits gathered into shared submissions (hpcexec.gathering), on a recording
submitter, and through the Executor on the local backend."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass, field

import pytest

import hpcexec
from hpcexec.errors import BackendError, ResourceError
from hpcexec.gathering import MOST, Gathering


class Settled:
    """Stands in for a job's future: what it was settled with."""

    def __init__(self) -> None:
        self.exc: BaseException | None = None

    def settle(self, result=None, exc=None) -> None:
        self.exc = exc


@dataclass
class FakeJob:
    key: str
    futures: list[Settled] = field(default_factory=lambda: [Settled()])


class Recorder:
    """A submitter that records each submission; the first one waits for ``go``."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[list[str], object, str]] = []
        self.first_started = threading.Event()
        self.go = threading.Event()
        self.fail_on = fail_on

    def submit(self, jobs, opts) -> None:
        self.calls.append(([j.key for j in jobs], opts, threading.current_thread().name))
        if len(self.calls) == 1:
            self.first_started.set()
            assert self.go.wait(10)
        if self.fail_on in [j.key for j in jobs]:
            raise OSError("the disk is full")


def test_submits_handed_over_while_one_submission_runs_go_as_one_next():
    rec, g, opts = Recorder(), Gathering(), object()
    g.add([FakeJob("a")], opts, rec.submit)
    assert rec.first_started.wait(10)  # a lone submit starts at once, no window
    for key in "bcde":
        g.add([FakeJob(key)], opts, rec.submit)
    assert g.waits("c") and not g.waits("z")
    rec.go.set()
    g.flush()
    assert [keys for keys, _, _ in rec.calls] == [["a"], ["b", "c", "d", "e"]]
    assert not g.waits("c")


def test_order_is_kept_and_only_runs_of_the_same_options_and_submitter_join():
    rec, other, g = Recorder(), Recorder(), Gathering()
    rec.go.set()
    other.go.set()
    one, two = object(), object()
    with g_held(g):  # nothing is submitted until the flush, in this thread
        g.add([FakeJob("a")], one, rec.submit)
        g.add([FakeJob("b")], one, rec.submit)
        g.add([FakeJob("c")], two, rec.submit)
        g.add([FakeJob("d")], two, other.submit)
        g.add([FakeJob("e"), FakeJob("f")], two, other.submit)
    g.flush()
    assert [(keys, o) for keys, o, _ in rec.calls] == [(["a", "b"], one), (["c"], two)]
    assert [keys for keys, _, _ in other.calls] == [["d", "e", "f"]]


class g_held:  # reads as a phrase: "with g_held(g):"
    """Holds a Gathering's submissions (as a long one in flight would) for a ``with`` block,
    by handing over first a job whose submission waits for the block to end."""

    def __init__(self, g: Gathering) -> None:
        self.g, self.rec = g, Recorder()

    def __enter__(self) -> None:
        self.g.add([FakeJob("held")], object(), self.rec.submit)
        assert self.rec.first_started.wait(10)

    def __exit__(self, *exc) -> None:
        self.rec.go.set()


def test_a_long_run_goes_in_parts_so_that_written_jobs_can_start():
    rec, g, opts = Recorder(), Gathering(), object()
    rec.go.set()
    with g_held(g):
        for i in range(MOST + 8):
            g.add([FakeJob(str(i))], opts, rec.submit)
    g.flush()
    assert [len(keys) for keys, _, _ in rec.calls] == [MOST, 8]


def test_now_submits_after_what_was_handed_over_and_raises_its_own_error():
    rec, g, opts = Recorder(fail_on="x"), Gathering(), object()
    rec.go.set()
    g.add([FakeJob("a")], opts, rec.submit)
    with pytest.raises(OSError, match="disk is full"):
        g.now([FakeJob("x")], opts, rec.submit)
    assert [keys for keys, _, _ in rec.calls] == [["a"], ["x"]]


def test_a_failed_gathered_submission_fails_its_futures_and_no_others():
    rec, g = Recorder(fail_on="bad"), Gathering()
    ok, bad = FakeJob("ok"), FakeJob("bad")
    with g_held(g):
        g.add([ok], object(), rec.submit)
        g.add([bad], object(), rec.submit)
    rec.go.set()
    g.flush()
    assert ok.futures[0].exc is None
    assert isinstance(bad.futures[0].exc, OSError)
    assert not g.waits("bad")


def test_flush_from_a_caller_submits_in_its_thread():
    rec, g, opts = Recorder(), Gathering(), object()
    rec.go.set()
    with g_held(g):
        g.add([FakeJob("a")], opts, rec.submit)
        g.add([FakeJob("b")], opts, rec.submit)
        waiter = threading.Thread(target=g.flush)
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive() and not rec.calls  # it waits for the submission in flight
    waiter.join(10)
    assert [keys for keys, _, _ in rec.calls] == [["a", "b"]]  # and then submits theirs


# -- through the Executor --------------------------------------------------------------------


def test_a_loop_of_submits_shares_submissions_and_every_result_arrives(tmp_path):
    with hpcexec.Executor(cache_dir=tmp_path / "cache") as ex:
        fs = [ex.submit(pow, i, 2) for i in range(60)]
        assert [f.result(timeout=120) for f in fs] == [i * i for i in range(60)]
        submitted = {f.record.submitted for f in fs}  # one time per shared submission
    assert len(submitted) < 60


def test_what_cannot_work_is_refused_by_submit_itself(tmp_path):
    with hpcexec.Executor(cache_dir=tmp_path / "cache") as ex:
        with pytest.raises(ResourceError, match="workdir"):
            ex.options(workdir=str(tmp_path / "missing")).submit(pow, 2, 2)
        with pytest.raises(BackendError, match="could never start"):
            ex.options(threads=10_000).submit(pow, 2, 2)
        with pytest.raises(ResourceError, match=r"uses \{mem\}"):  # its script: rendered
            ex.submit_shell("echo {mem}")
        with pytest.raises(ResourceError, match=r"uses \{time\}"):  # and its hooks
            ex.options(aux_scripts={"a.sh": "echo {time}"}).submit(pow, 2, 2)
    assert list(hpcexec.Store(tmp_path / "cache").select()) == []  # nothing was written


def test_a_submit_right_before_the_interpreter_exits_is_not_lost(tmp_path):
    """The gathering thread is not a daemon: a script that submits and ends (no shutdown,
    no result) leaves the job submitted, as it did when submit wrote the record itself."""
    cache = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        import hpcexec
        ex = hpcexec.Executor(cache_dir={str(cache)!r})
        ex.options(name="kept").submit_shell("echo kept")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    with hpcexec.Executor(cache_dir=cache) as ex:
        (f,) = [ex.attach(r.key) for r in ex.session.store.select() if r.name == "kept"]
        assert f.result(timeout=120).stdout == "kept\n"
