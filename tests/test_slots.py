"""Slot reuse inside an array element (hpcexec.slots), run as the runner runs in a job:
`python -m hpcexec.runner JOBDIR KEYFILE` with HPCEXEC_SHARE naming the array directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import jobfns
from test_runner import outcomes, runner_argv, write_payload

from hpcexec.jobfiles import parse_exitcode
from hpcexec.layout import EXITCODE, STARTED, USAGE
from hpcexec.payload import outcome_value
from hpcexec.slots import CLAIMS, END_TIME, PEEK, SHARE, RecordTimes, claim, parse_claims


def make_array(tmp_path: Path, fn, args: list, time_limit=None) -> tuple[Path, list[Path]]:
    base = tmp_path / "array"
    (base / CLAIMS).mkdir(parents=True)
    dirs = []
    for i, a in enumerate(args):
        d = tmp_path / f"job{i}"
        write_payload(d, fn, [((a,), {})], sys_path=[str(Path(jobfns.__file__).parent)])
        dirs.append(d)
    spec = {
        "jobdirs": [str(d) for d in dirs],
        "names": [f"n{i}" for i in range(len(dirs))],
        "outputs": [[str(d / "stdout"), str(d / "stderr")] for d in dirs],
        "time_limit": time_limit,
        "index_base": 0,
    }
    (base / SHARE).write_text(json.dumps(spec))
    return base, dirs


def start_element(base: Path, own: Path, index: int, new_session: bool = False) -> subprocess.Popen:
    assert claim(base, index)  # as the element's dispatcher does
    env = {
        **os.environ,
        "HPCEXEC_SHARE": str(base),
        "HPCEXEC_JOB_ID": f"E_{index}",
        "HPCEXEC_ARRAY_INDEX": str(index),
    }
    return subprocess.Popen(runner_argv(own), env=env, cwd=own, start_new_session=new_session)


def value(d: Path):
    return outcome_value(outcomes(d)[0], str(d))


def test_an_element_runs_the_tasks_nobody_has_started(tmp_path):
    base, dirs = make_array(tmp_path, jobfns.where, list(range(5)))
    assert start_element(base, dirs[0], 0).wait(timeout=60) == 0
    got = [value(d) for d in dirs]
    assert [g["i"] for g in got] == list(range(5))
    assert {g["job_id"] for g in got} == {"E_0"}
    assert [g["index"] for g in got] == [str(i) for i in range(5)]
    assert len({g["pid"] for g in got}) == 5  # a fresh process for each task
    assert len({g["parent"] for g in got}) == 1  # forked from the one runner
    for i, d in enumerate(dirs[1:], 1):
        assert (d / "stdout").read_text() == f"task {i} on stdout\n"
        assert (d / STARTED).read_text().split("\n")[0] == "E_0"
    claimed, ran_by = parse_claims(os.listdir(base / CLAIMS))
    assert claimed == set(range(5)) and ran_by == {i: "E_0" for i in range(1, 5)}


def test_tasks_another_element_claimed_are_left_alone(tmp_path):
    base, dirs = make_array(tmp_path, jobfns.where, list(range(4)))
    assert claim(base, 3, "E_3") and claim(base, 1)  # one taken elsewhere, one cancelled
    assert start_element(base, dirs[0], 0).wait(timeout=60) == 0
    assert [(d / EXITCODE).exists() for d in dirs] == [True, False, True, False]


def test_no_task_is_taken_when_the_time_limit_leaves_no_room(tmp_path):
    base, dirs = make_array(tmp_path, jobfns.sleep_then, [0.5, 0, 0], time_limit=1)
    assert start_element(base, dirs[0], 0).wait(timeout=60) == 0
    assert [(d / EXITCODE).exists() for d in dirs] == [True, False, False]


def test_sigterm_to_the_job_stops_the_element_and_the_running_task_records_it(tmp_path):
    base, dirs = make_array(tmp_path, jobfns.sleep_then, [0, 0, 60])
    p = start_element(base, dirs[0], 0, new_session=True)
    deadline = time.monotonic() + 30
    while not (dirs[2] / STARTED).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into the task's sleep
    os.killpg(p.pid, signal.SIGTERM)  # as a scheduler signals the whole job
    assert p.wait(timeout=30) == 128 + signal.SIGTERM
    code, reason = parse_exitcode((dirs[2] / EXITCODE).read_text())
    assert code == 128 + signal.SIGTERM and "SIGTERM" in reason
    assert not (dirs[1] / EXITCODE).exists()  # nothing more was started


def test_tasks_share_slots_only_without_stdin_and_join_their_output_when_asked():
    from types import SimpleNamespace

    from hpcexec.layout import JobLayout
    from hpcexec.schedscript import shareable

    def recs(**res):
        return [SimpleNamespace(kind="call", resources={"python": "python3", **res})] * 3

    assert shareable(recs(), [], False)
    assert not shareable(recs(stdin="/data/in"), [], False)
    joined = JobLayout.of("/j", {"workdir": "/w", "join_output": True, "stdout": "out.txt"})
    assert (joined.stdout, joined.stderr_target) == ("/w/out.txt", "/w/out.txt")
    plain = JobLayout.of("/j", {"workdir": "/w"})
    assert (plain.stdout, plain.stderr_target) == ("/j/stdout", "/j/stderr")


def test_an_element_takes_one_more_record_when_its_time_leaves_room_for_one(tmp_path):
    """Records of ~3 s, a limit of 14 s (margin 5 s): after its own record (t ~ 3 s) the
    next one's 1.5 x 3 s fits before 9 s; after that one (t ~ 6 s) it does not."""
    base, dirs = make_array(tmp_path, jobfns.sleep_then, [3] * 5, time_limit=14)
    assert start_element(base, dirs[0], 0).wait(timeout=60) == 0
    assert [(d / EXITCODE).exists() for d in dirs] == [True, False, False, False, True]


def test_records_measured_long_elsewhere_are_not_taken(tmp_path):
    """The element's own record is short, the rest take 8 s: two ended in other elements
    (their usage files say so). Under a limit of 8 s the rule of an element's own times
    would take one and overrun; the measured times of the others stop it."""
    base, dirs = make_array(tmp_path, jobfns.sleep_then, [0.1, 8, 8, 8, 8], time_limit=8)
    for i in (3, 4):
        assert claim(base, i, f"E_{i}")
        (dirs[i] / USAGE).write_text("max_rss_kib 1000\nwall_s 8.004\n")
        (dirs[i] / EXITCODE).write_text("0\n\n")
    t0 = time.monotonic()
    assert start_element(base, dirs[0], 0).wait(timeout=60) == 0
    assert time.monotonic() - t0 < 7
    assert [(d / EXITCODE).exists() for d in dirs] == [True, False, False, True, True]


def test_slurms_end_time_of_the_job_bounds_an_element_whose_limit_is_unknown(tmp_path, monkeypatch):
    base, dirs = make_array(tmp_path, jobfns.sleep_then, [0.1] * 4)
    monkeypatch.setenv(END_TIME, str(int(time.time()) + 4))  # less than the margin left
    assert start_element(base, dirs[0], 0).wait(timeout=60) == 0
    assert [(d / EXITCODE).exists() for d in dirs] == [True, False, False, False]
    monkeypatch.delenv(END_TIME)
    base, dirs = make_array(tmp_path / "unknown", jobfns.sleep_then, [0.1] * 4)
    assert start_element(base, dirs[0], 0).wait(timeout=60) == 0
    assert all((d / EXITCODE).exists() for d in dirs)  # 300 s when nothing is known


def test_record_times_are_read_a_few_files_at_a_time_lowest_index_first(tmp_path):
    jobdirs = [str(tmp_path / f"job{i}") for i in range(1000)]
    for i, wall in ((500, 2.5), (999, 7.0)):
        os.mkdir(jobdirs[i])
        Path(jobdirs[i], USAGE).write_text(f"user_s 0.1\nwall_s {wall}\n")
    times = RecordTimes(jobdirs, own_index=0)
    times.ran(1.0)
    looks = [times.look() for _ in range(999 // PEEK + 1)]
    assert sum(looks) == 2 and looks.index(1) == (500 - 1) // PEEK  # own record 0 is not read
    assert times.longest == 7.0
    assert times.look() == 0 and times.longest == 7.0  # each found once
