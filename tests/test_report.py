"""hpcexec.report: waits, runs and use of what jobs asked for, and the advice drawn."""

from __future__ import annotations

import pytest

from hpcexec.future import JobInfo
from hpcexec.record import JobRecord
from hpcexec.report import advice, summary, usage_of
from hpcexec.states import JobState


def rec(key="k1", name="sweep", *, submitted=100.0, started=130.0, finished=190.0, cores=4, **res):
    return JobRecord(
        key=key,
        backend="slurm",
        host="here",
        kind="call",
        jobdir=f"/j/{key}",
        state=JobState.COMPLETED,
        name=name,
        submitted=submitted,
        started=started,
        finished=finished,
        cores=cores,
        resources=res,
    )


def info(wall=60.0, cpu=None, rss=None):
    return JobInfo("1", JobState.COMPLETED, 0, None, False, None, wall, cpu, rss, "n1")


def test_a_jobs_wait_run_and_ratios():
    u = usage_of(rec(mem=16384, time=7200, nodes=2), info(wall=60.0, cpu=120.0, rss=1200.0))
    assert (u.waited, u.ran, u.cores) == (30.0, 60.0, 8)  # 4 cores per node x 2 nodes
    assert u.cpu_efficiency == pytest.approx(120 / (8 * 60))
    assert u.mem_share == pytest.approx(1200 / 16384)
    assert u.time_share == pytest.approx(60 / 7200)
    bare = usage_of(rec(started=None, finished=None), None)  # never ran: nothing to divide
    assert (bare.waited, bare.ran, bare.cpu_efficiency, bare.mem_share) == (None,) * 4
    no_info = usage_of(rec(), None)  # the record's times still tell the run
    assert no_info.ran == 60.0 and no_info.cpu_seconds is None


def test_advice_per_name_from_the_largest_use_with_what_to_ask_for():
    rows = [
        usage_of(rec(f"k{i}", mem=16384, time=14400), info(wall=600.0 + i, cpu=600.0, rss=rss))
        for i, rss in enumerate([800.0, 1200.0, 300.0])
    ]
    tips = advice(rows)
    assert tips == [
        "sweep (3 jobs): asked 16.0GB of memory, used at most 1.2GB: ask for about 1.8GB "
        "(mem='1.8GB')",
        "sweep (3 jobs): time limit 04:00:00, ran 00:10:02 at most: a shorter limit starts "
        "sooner (time='00:16:00')",
        "sweep (3 jobs): asked 4 cores, kept 1.0 busy at most: ask for 2 (threads x ppn)",
    ]
    # one job that used half of it: no advice; a small spare is not worth a line
    assert advice([usage_of(rec(mem=4096, time=600), info(wall=300.0, cpu=1000, rss=2048))]) == []
    assert advice([usage_of(rec(mem=1024, cores=1), info(rss=100.0))]) == []


def test_summary_totals():
    rows = [
        usage_of(rec("a", started=110.0, finished=170.0), info(wall=60.0, cpu=120.0)),
        usage_of(rec("b", started=150.0, finished=210.0), info(wall=60.0, cpu=60.0)),
        usage_of(rec("c", started=None, finished=None), None),
    ]
    t = summary(rows)
    assert t["jobs"] == 3 and (t["median_wait"], t["longest_wait"]) == (50.0, 50.0)
    assert t["core_hours_reserved"] == pytest.approx(2 * 4 * 60 / 3600)
    assert t["cpu_efficiency"] == pytest.approx(180 / 480)
    assert summary([])["cpu_efficiency"] is None
