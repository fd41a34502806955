"""Unit tests for the pure parts of hpcexec.backends.local."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from hpcexec.backends.local import (
    LocalBackend,
    ProcStat,
    make_job_id,
    parse_proc_stat,
    plan_starts,
    split_job_id,
)
from hpcexec.errors import BackendError
from hpcexec.resources import Resources

CLK_TCK = os.sysconf("SC_CLK_TCK")


def uptime_ticks() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0]) * CLK_TCK


# -- parse_proc_stat -------------------------------------------------------------------


def test_parse_proc_stat_of_this_process():
    with open("/proc/self/stat") as f:
        text = f.read()
    st = parse_proc_stat(text)
    assert st is not None
    assert st.state == "R"  # it is running: it is reading its own stat
    assert 0 <= st.start <= uptime_ticks() + 1
    assert str(st.start) == text.split()[21]  # python's comm has no spaces


def test_parse_proc_stat_of_a_sleeping_child_started_later():
    with open(f"/proc/{os.getpid()}/stat") as f:
        mine = parse_proc_stat(f.read())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while True:
            with open(f"/proc/{child.pid}/stat") as f:
                st = parse_proc_stat(f.read())
            if st.state == "S" or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert st.state == "S"
        assert st.start >= mine.start  # started after this process
        assert st.start <= uptime_ticks() + 1
    finally:
        child.kill()
        child.wait()
    with open(f"/proc/{os.getpid()}/stat") as f:
        assert parse_proc_stat(f.read()).start == mine.start  # stable for one process


def crafted(comm: str, state: str = "S", start: int = 987654) -> str:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime priority nice num_threads itrealvalue starttime ...
    after = [
        state,
        "1",
        "4321",
        "4321",
        "0",
        "-1",
        "4194560",
        "100",
        "0",
        "0",
        "0",
        "5",
        "6",
        "0",
        "0",
        "20",
        "0",
        "1",
        "0",
        str(start),
        "12345678",
        "345",
        "18446744073709551615",
    ] + ["0"] * 29
    return f"4321 ({comm}) " + " ".join(after) + "\n"


@pytest.mark.parametrize(
    "comm", ["bash", "my prog", "a) b (c", "x) S 1 2 3 4 5 6 7 8 9 10", ")", "((()))", " ", ""]
)
def test_parse_proc_stat_crafted_command_names(comm):
    assert parse_proc_stat(crafted(comm, "Z", 1234567)) == ProcStat(state="Z", start=1234567)


@pytest.mark.parametrize(
    "text", ["", "garbage", "123 (name", "123 (name) S 1 2 3", crafted("x").split(")")[0]]
)
def test_parse_proc_stat_refuses_incomplete_text(text):
    assert parse_proc_stat(text) is None


# -- job ids ---------------------------------------------------------------------------


@pytest.mark.parametrize("pid, start", [(1, 0), (4321, 987654), (4194304, 2**40)])
def test_job_id_round_trip(pid, start):
    job_id = make_job_id(pid, start)
    assert job_id == f"{pid}:{start}"
    assert split_job_id(job_id) == (pid, start)


def test_split_job_id_without_start_time():
    assert split_job_id("4321") == (4321, 0)
    assert split_job_id("4321:") == (4321, 0)


def test_split_job_id_refuses_garbage():
    with pytest.raises(ValueError):
        split_job_id("abc:12")
    with pytest.raises(ValueError):
        split_job_id("12:xyz")


# -- plan_starts -----------------------------------------------------------------------


def test_plan_starts_fifo():
    pending = [("a", 1), ("b", 1), ("c", 1), ("d", 1)]
    assert plan_starts(pending, 2) == ["a", "b"]
    assert plan_starts(pending, 10) == ["a", "b", "c", "d"]


def test_plan_starts_backfills_behind_a_big_job():
    pending = [("big", 8), ("s1", 1), ("s2", 2), ("s3", 4), ("s4", 1)]
    assert plan_starts(pending, 4) == ["s1", "s2", "s4"]
    assert plan_starts(pending, 8) == ["big"]
    assert plan_starts(pending, 9) == ["big", "s1"]


def test_plan_starts_exact_fit_and_order_kept():
    assert plan_starts([("a", 3), ("b", 2), ("c", 1)], 3) == ["a"]
    assert plan_starts([("a", 2), ("b", 3), ("c", 1)], 3) == ["a", "c"]


@pytest.mark.parametrize("free", [0, -2])
def test_plan_starts_no_free_cores(free):
    assert plan_starts([("a", 1), ("b", 1)], free) == []


def test_plan_starts_nothing_pending_and_generators():
    assert plan_starts([], 4) == []
    assert plan_starts(((k, 1) for k in "xyz"), 2) == ["x", "y"]


# -- LocalBackend.check ----------------------------------------------------------------


def test_check_accepts_what_fits():
    backend = LocalBackend(4)
    backend.check(Resources())
    backend.check(Resources.create(nodes=1, threads=2, ppn=2))
    backend.check(Resources.create(threads=4))


def test_check_refuses_several_nodes():
    with pytest.raises(BackendError) as info:
        LocalBackend(64).check(Resources.create(nodes=2))
    message = str(info.value)
    assert "nodes=2" in message
    assert "drop `nodes`" in message
    assert "backend='slurm'" in message


def test_fits_refuses_more_cores_than_the_machine():
    LocalBackend(4).check(Resources.create(threads=3, ppn=2))  # expressible: a preview renders
    with pytest.raises(BackendError) as info:
        LocalBackend(4).fits(Resources.create(threads=3, ppn=2))
    message = str(info.value)
    assert "6 cores" in message
    assert "has 4" in message
    assert "Ask for at most 4" in message


def test_ignored_resources():
    backend = LocalBackend(4)
    assert backend.ignored(Resources.create(threads=2, time=5)) == []
    res = Resources.create(queue="q", account="a", gpus=1, native=["--x"], mem="1G", threads=2)
    assert backend.ignored(res) == ["queue", "account", "native", "mem"]  # gpus: the GPU pool


def test_spawn_argv():
    assert list(LocalBackend(1).spawn_argv("/j/job.sh")) == ["/bin/bash", "/j/job.sh"]
