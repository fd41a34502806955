"""LSF's parse and render functions against recorded real output
(tests/fixtures/lsf/, each file naming its source)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from recorded_output import read_output

from hpcexec.backends.base import SubmitSpec
from hpcexec.backends.lsf import LsfBackend, record_status
from hpcexec.errors import BackendError, SchedulerOutputError, SubmitError
from hpcexec.resources import Resources
from hpcexec.script import render
from hpcexec.states import JobState

FIXTURES = Path(__file__).parent.parent / "fixtures" / "lsf"
lsf = LsfBackend()


def fixture(name: str) -> str:
    return read_output(FIXTURES / name)


def records(name: str) -> list[dict]:
    return json.loads(fixture(name))["RECORDS"]


def test_submit_output():
    assert lsf.parse_submit(fixture("bsub_submit_queue.txt")) == "764254593"
    assert lsf.parse_submit(fixture("bsub_submit_default_queue.txt")) == "1"
    with pytest.raises(SubmitError):
        lsf.parse_submit("nosuchqueue: No such queue. Job not submitted.\n")
    spec = SubmitSpec("/j/submit.sh", Resources(), "x", "/j/stdout", "/j/stderr", "/w")
    assert lsf.submit_argv(spec) == ["bsub"] and lsf.submit_stdin  # bsub < script


def test_elements_are_one_based():
    assert [lsf.element_id("764254593", i) for i in (0, 4)] == ["764254593[1]", "764254593[5]"]
    assert lsf.array_index_base == 1 and lsf.array_index_pattern == "%I"
    argv = lsf.status_argv(["12[2]", "12[1]", "9", "100[3]"])
    assert argv[:5] == ["bjobs", "-a", "-o", argv[3], "-json"] and argv[5:] == ["9", "12", "100"]
    assert argv[3].split()[:3] == ["jobid", "jobindex", "stat"]


def test_pending_killed_and_held_records():
    pend = record_status(records("bjobs_json_pend.json")[0])
    assert (pend.state, pend.reason) == (JobState.PENDING, "New job is waiting for scheduling")
    killed = record_status(records("bjobs_json_exit_killed.json")[0])
    assert (killed.state, killed.exit_code) == (JobState.CANCELLED, None)  # EXIT_CODE ""
    assert killed.reason == "killed by its owner"
    held = record_status(records("bjobs_json_psusp.json")[0])
    assert held.state is JobState.HELD and held.nodelist is None


def test_done_and_exit_by_job_id():
    got = lsf.parse_status(fixture("bjobs_json_done_exit.json"), "", 0)
    assert {j: s.state for j, s in got.items()} == {
        "487641": JobState.FAILED,
        "487642": JobState.FAILED,
        "488155": JobState.FAILED,
        "491861": JobState.COMPLETED,
        "491864": JobState.COMPLETED,
        "491867": JobState.COMPLETED,
    }
    assert got["491861"].exit_code == 0  # DONE leaves EXIT_CODE empty: it means 0
    detailed = lsf.parse_status(fixture("bjobs_json_done_detailed.json"), "", 0)["22005"]
    assert (detailed.state, detailed.exit_code, detailed.nodelist) == (
        JobState.COMPLETED,
        0,
        "tbi-cn019",
    )
    assert detailed.elapsed == 1 and detailed.max_rss == 5325  # "5.2 Gbytes"


def test_running_record_from_the_excerpt():
    # The excerpt stops mid-list (not parseable as a whole); its first record is complete.
    record = re.search(r"\{[^{}]*\"JOBID\"[^{}]*\}", fixture("bjobs_json_running_excerpt.txt"))
    st = record_status(json.loads(record[0]))
    assert st.state is JobState.RUNNING and st.elapsed == 16038  # "16038 second(s)"


def _record(**fields) -> dict:
    """The recorded killed job's record with other values in its fields."""
    return {**records("bjobs_json_exit_killed.json")[0], **fields}


@pytest.mark.parametrize(
    "fields, state, code, reason",
    [
        (dict(EXIT_CODE="3", EXIT_REASON=""), JobState.FAILED, 3, None),
        (
            dict(
                EXIT_CODE="140",
                EXIT_REASON="TERM_RUNLIMIT: job killed after reaching LSF run time limit",
            ),
            JobState.TIMEOUT,
            140,
            "walltime exceeded",
        ),
        (
            dict(
                EXIT_CODE="",
                EXIT_REASON="TERM_MEMLIMIT: job killed after reaching LSF memory usage limit",
            ),
            JobState.FAILED,
            None,
            "out of memory",
        ),
        (
            dict(
                STAT="PEND",
                EXIT_REASON="",
                PEND_REASON="Dependency condition invalid or never satisfied;",
            ),
            JobState.PENDING,
            None,
            "DependencyNeverSatisfied",
        ),
        (dict(STAT="USUSP"), JobState.SUSPENDED, None, None),
    ],
)
def test_exit_reasons_and_pending_reasons(fields, state, code, reason):
    st = record_status(_record(**fields))
    assert (st.state, st.exit_code, st.reason) == (state, code, reason)


def test_array_elements_are_keyed_with_their_index():
    recs = [dict(JOBID="7", JOBINDEX=str(i), STAT="DONE", EXIT_CODE="") for i in (1, 2)]
    recs.append(dict(JOBID="8", JOBINDEX="0", STAT="RUN", EXIT_CODE=""))
    out = json.dumps({"COMMAND": "bjobs", "JOBS": 3, "RECORDS": recs})
    assert set(lsf.parse_status(out, "", 0)) == {"7[1]", "7[2]", "8"}


def test_unknown_ids_and_failures():
    assert lsf.parse_status("", fixture("bjobs_not_found.txt"), 255) == {}
    # With -json LSF lists an unknown id as an ERROR record (as psij-python handles it).
    found = json.loads(fixture("bjobs_json_done_detailed.json"))
    found["RECORDS"].append({"ERROR": "Job <864220165> is not found"})
    assert set(lsf.parse_status(json.dumps(found), fixture("bjobs_not_found.txt"), 255)) == {
        "22005"
    }
    with pytest.raises(SchedulerOutputError, match="LSF is down"):
        lsf.parse_status("", "LSF is down. Please wait ...", 255)
    with pytest.raises(SchedulerOutputError):
        lsf.parse_status("{not json", "", 0)


def test_directives_render_the_resource_model():
    res = Resources.create(
        queue="normal",
        account="proj",
        time="1:30:30",
        soft_time="1:00:30",
        nodes=2,
        ppn=4,
        threads=2,
        mem="2GB",
        gpus=1,
        native=["-x", "#BSUB -app big"],
    )
    spec = SubmitSpec(
        "/arr/submit.sh",
        res,
        "my job",
        "/arr/%I.out",
        "/arr/%I.err",
        "/w",
        array_size=5,
        array_limit=2,
        hold=True,
        after=("5", "6[2]"),
    )
    assert lsf.directives(spec) == [
        '#BSUB -J "my_job[1-5]%2"',
        '#BSUB -o "/arr/lsf.%J.%I.out"',
        '#BSUB -e "/arr/lsf.%J.%I.err"',
        "#BSUB -q normal",
        "#BSUB -P proj",
        "#BSUB -W 1:31",  # whole minutes, rounded up
        "#BSUB -We 1:01",  # the estimated run time: DRMAA's soft wallclock limit
        "#BSUB -n 16",
        '#BSUB -R "span[ptile=8]"',
        '#BSUB -R "rusage[mem=2048MB]"',
        "#BSUB -M 4096MB",
        '#BSUB -gpu "num=1"',
        "#BSUB -H",
        '#BSUB -w "done(5) && done(6[2])"',
        "#BSUB -x",
        "#BSUB -app big",
    ]
    single = SubmitSpec(
        "/j/submit.sh", Resources.create(threads=4), "x", "/j/stdout", "/j/stderr", "/w"
    )
    assert lsf.directives(single) == [
        '#BSUB -J "x"',
        '#BSUB -o "/j/lsf.%J.out"',
        '#BSUB -e "/j/lsf.%J.err"',
        "#BSUB -n 4",
        '#BSUB -R "span[hosts=1]"',
    ]
    lsf.check(Resources.create(native=["#BSUB -x"]))
    with pytest.raises(BackendError, match="not an LSF directive"):
        lsf.check(Resources.create(native=["#PBS -l place=excl"]))


@pytest.mark.parametrize("index, job_id, element", [("3", "7[3]", "2"), ("0", "7", "")])
def test_job_script_converts_the_one_based_index(tmp_path, index, job_id, element):
    parts = lsf.script_parts(
        Resources(),
        name="x",
        jobdir=str(tmp_path),
        stdout="out",
        stderr="out",
        workdir=str(tmp_path),
    )
    script = render(
        parts,
        Resources(),
        jobdir=str(tmp_path),
        workdir=str(tmp_path),
        submit_host="h",
        name="x",
        shell_body='echo "$HPCEXEC_JOB_ID|$HPCEXEC_ARRAY_INDEX|$HPCEXEC_NODELIST"; echo oops >&2',
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "LSB_JOBID": "7",
        "LSB_JOBINDEX": index,
        "LSB_MCPU_HOSTS": "hostA 4 hostB 4",
    }
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == ""  # not into LSF's -o file (its report)
    assert (tmp_path / "out").read_text() == f"{job_id}|{element}|hostA,hostB\noops\n"


def test_commands_and_max_array():
    assert lsf.cancel_argv(["7[2]", "8"]) == ["bkill", "7[2]", "8"]
    assert lsf.hold_argv(["8"]) == ["bstop", "8"]
    assert lsf.release_argv(["8"]) == ["bresume", "8"]
    assert lsf.parse_max_array("MAX_JOB_ARRAY_SIZE = 10000\n") == 10000
