"""`hpcexec jobs` on a cache of many records: the table shows the newest, says how many more
and how to see them; `--json` lists every record, streamed, in the order `--all` shows."""

from __future__ import annotations

import json
import time

import pytest

from hpcexec.record import JobRecord
from hpcexec.states import JobState
from hpcexec.store import Store

N = 130  # more than the table's default of 50


@pytest.fixture
def filled(cli):
    """N finished records of a past SLURM workload, one submitted per second (job i is
    ``sweep-<i>``; every 10th failed)."""
    store = Store(cli.cwd / ".hpcexec")
    start = time.time() - 86400
    with store.write() as tx:
        for i in range(N):
            tx.put(
                JobRecord(
                    key=f"k{i:04d}",
                    backend="slurm",
                    host="cluster-a",
                    kind="call",
                    jobdir=f"/scratch/jobs/k{i:04d}",
                    state=JobState.FAILED if i % 10 == 0 else JobState.COMPLETED,
                    name=f"sweep-{i}",
                    job_id=str(1000 + i),
                    submitted=start + i,
                    finished=start + i + 5,
                    exit_code=int(i % 10 == 0),
                    tags=["even"] if i % 2 == 0 else [],
                )
            )
    store.close()
    return cli


def keys(table: str) -> list[str]:
    return [line.split()[0] for line in table.splitlines()[1:]]


def test_the_table_shows_the_newest_50_and_says_how_to_see_more(filled):
    r = filled("jobs", "--no-refresh")
    assert keys(r.out) == [f"k{i:04d}" for i in range(N - 50, N)]  # oldest of them first
    assert r.err.strip() == (
        f"hpcexec: the 50 most recently submitted of {N} jobs; {N - 50} older not shown: "
        "--last N for more, --all for every one"
    )
    r = filled("jobs", "--no-refresh", "--last", "3")
    assert keys(r.out) == ["k0127", "k0128", "k0129"] and f"{N - 3} older" in r.err
    r = filled("jobs", "--no-refresh", "--all")
    assert keys(r.out) == [f"k{i:04d}" for i in range(N)] and r.err == ""
    r = filled("jobs", "--no-refresh", "--last", str(N))
    assert len(keys(r.out)) == N and r.err == ""  # nothing left out: nothing said


def test_filters_choose_before_the_newest_are_taken(filled):
    r = filled("jobs", "--no-refresh", "--state", "failed", "--last", "2")
    assert keys(r.out) == ["k0110", "k0120"]
    assert "the 2 most recently submitted of 13 jobs; 11 older" in r.err
    r = filled("jobs", "--no-refresh", "--match", "even", "--last", "2")  # a tag
    assert keys(r.out) == ["k0126", "k0128"] and f"of {N // 2} jobs" in r.err
    assert filled("jobs", "--no-refresh", "--match", "nothing-like-it").out == "no jobs\n"


def test_json_lists_every_record_one_per_line(filled):
    r = filled("--json", "jobs", "--no-refresh")
    listed = json.loads(r.out)
    assert [j["key"] for j in listed] == [f"k{i:04d}" for i in range(N)]
    assert r.err == ""
    assert listed[12]["state"] == "completed" and listed[12]["tags"] == ["even"]
    assert listed[0]["state"] == "failed" and listed[0]["exit_code"] == 1
    assert r.out.count("\n") == N + 2  # "[", one line per record, "]"
    last = filled.json("jobs", "--no-refresh", "--last", "2", "--state", "completed")
    assert [j["key"] for j in last] == ["k0128", "k0129"]
    assert filled.json("jobs", "--no-refresh", "--match", "nothing-like-it") == []


def test_a_bad_count_says_what_is_wanted(cli):
    r = cli("jobs", "--last", "0", ok=False)
    assert r.code == 2 and "'0' is not a positive whole number (e.g. 200)" in r.err
    r = cli("jobs", "--last", "3", "--all", ok=False)
    assert r.code == 2 and "not allowed with argument" in r.err
