"""PBS Pro's parse and render functions against recorded real output
(tests/fixtures/pbspro/, each file naming its source)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from recorded_output import read_output

from hpcexec.backends.base import SubmitSpec
from hpcexec.backends.pbspro import PbsProBackend, array_of
from hpcexec.errors import BackendError, SchedulerOutputError, SubmitError
from hpcexec.resources import Resources
from hpcexec.script import render
from hpcexec.states import JobState

FIXTURES = Path(__file__).parent.parent / "fixtures" / "pbspro"
pbs = PbsProBackend()
QUEUED = "4683812.aurora-pbs-0001.hostmgmt.cm.aurora.alcf.anl.gov"
HELD = "4905429.aurora-pbs-0001.hostmgmt.cm.aurora.alcf.anl.gov"


def fixture(name: str) -> str:
    return read_output(FIXTURES / name)


def test_submit_output():
    assert pbs.parse_submit(fixture("qsub_submit.txt")) == "2152.edtb-01.mcp.alcf.anl.gov"
    assert pbs.parse_submit(fixture("qsub_submit_no_server_suffix.txt")) == "24"
    assert pbs.parse_submit(fixture("qsub_array_submit.txt")) == "506493[].isrv5"
    with pytest.raises(SubmitError, match="Unknown queue"):
        pbs.parse_submit(fixture("qsub_error_unknown_queue.txt"))


def test_element_ids_and_whole_array_queries():
    array = pbs.parse_submit(fixture("qsub_array_submit.txt"))
    assert [pbs.element_id(array, i) for i in (0, 899)] == ["506493[0].isrv5", "506493[899].isrv5"]
    assert pbs.element_id("24[]", 3) == "24[3]"
    # The subjob ids qstat -a printed belong to the array id it printed for the parent.
    subjobs = [
        line.split()[0]
        for line in fixture("qstat_a_array_subjobs.txt").splitlines()
        if line.startswith("12345[")
    ]
    parent = [
        line.split()[0]
        for line in fixture("qstat_a_array_parent.txt").splitlines()
        if line.startswith("12345[")
    ]
    assert subjobs[0] == "12345[1].dm2" and {array_of(j) for j in subjobs} == set(parent)
    argv = pbs.status_argv(["12[3].srv", "9.srv", "12[4].srv", "100[0].srv"])
    assert argv == ["qstat", "-x", "-f", "-F", "json", "-t", "9.srv", "12[].srv", "100[].srv"]


def test_queued_and_held_records():
    queued = pbs.parse_status(fixture("qstat_f_json_queued.json"), "", 0)
    assert queued[QUEUED].state is JobState.PENDING
    assert queued[QUEUED].reason.startswith("Not Running: Insufficient amount of resource")
    assert queued["4683812"] == queued[QUEUED]  # as qsub prints it without the server suffix
    held = pbs.parse_status(fixture("qstat_f_json_held.json"), "", 0)[HELD]
    assert held.state is JobState.HELD and held.exit_code is None
    assert held.reason == "Job held by mmin on Wed May 21 19:15:19 2025"


def test_running_record_with_usage():
    st = pbs.parse_status(fixture("qstat_f_json_running.json"), "", 0)["16705.sdb"]
    assert st.state is JobState.RUNNING
    assert (st.nodelist, st.elapsed, st.max_rss) == ("server", 26.0, 35)  # 35844kb


def test_finished_record_even_from_invalid_json():
    # The recorded F-state excerpt is not valid JSON (a trailing comma): PBS itself prints
    # invalid JSON at times, so the parser falls back to scanning each job's block.
    text = fixture("qstat_f_json_finished_excerpt.txt")
    with pytest.raises(ValueError):
        json.loads(text)
    st = pbs.parse_status(text, "", 0)["2154.edtb-01.mcp.alcf.anl.gov"]
    assert (st.state, st.exit_code) == (JobState.COMPLETED, 0)


def _finished(**fields) -> str:
    """The recorded held job, turned into an F record with the given fields."""
    data = json.loads(fixture("qstat_f_json_held.json"))
    job = data["Jobs"][HELD]
    job["job_state"] = "F"
    job.update(fields)
    return json.dumps(data)


@pytest.mark.parametrize(
    "fields, state, code, signal",
    [
        (dict(Exit_status=0), JobState.COMPLETED, 0, None),
        (dict(Exit_status=3), JobState.FAILED, 3, None),
        (dict(Exit_status=271), JobState.FAILED, 271, 15),  # killed by PBS with SIGTERM
        (dict(Exit_status=-29), JobState.TIMEOUT, -29, None),  # JOB_EXEC_KILL_WALLTIME
        (dict(Exit_status=-27), JobState.FAILED, -27, None),  # JOB_EXEC_KILL_MEM
        (dict(Exit_status=-1), JobState.FAILED, -1, None),  # JOB_EXEC_FAIL1
        (
            dict(
                Exit_status=271,
                comment="Job run at x on (n:ncpus=1) and exceeded resource walltime",
            ),
            JobState.TIMEOUT,
            271,
            15,
        ),
        (dict(comment="Job deleted"), JobState.CANCELLED, None, None),  # never ran: no status
    ],
)
def test_finished_states_from_exit_status(fields, state, code, signal):
    st = pbs.parse_status(_finished(**fields), "", 0)[HELD]
    assert (st.state, st.exit_code, st.signal) == (state, code, signal)


def test_array_as_a_whole_is_left_out():
    data = json.loads(fixture("qstat_f_json_running.json"))
    job = data["Jobs"].pop("16705.sdb")
    data["Jobs"]["16706[].sdb"] = {**job, "job_state": "B"}
    data["Jobs"]["16706[0].sdb"] = {**job, "job_state": "X", "Exit_status": 0}
    got = pbs.parse_status(json.dumps(data), "", 0)
    assert "16706[].sdb" not in got and got["16706[0].sdb"].state is JobState.COMPLETED


def test_unknown_ids_are_not_present_and_failures_raise():
    unknown = fixture("qstat_unknown_job.txt")
    assert pbs.parse_status("", unknown, 153) == {}
    assert pbs.parse_status("", fixture("qstat_finished_without_x.txt"), 35) == {}
    # qstat still prints the jobs it knows when another id is unknown
    both = pbs.parse_status(fixture("qstat_f_json_running.json"), unknown, 153)
    assert set(both) == {"16705.sdb", "16705"}
    with pytest.raises(SchedulerOutputError, match="cannot connect"):
        pbs.parse_status("", "qstat: cannot connect to server pbs01 (errno=111)", 2)
    with pytest.raises(SchedulerOutputError):
        pbs.parse_status("", "", 1)
    assert pbs.parse_status("", "", 0) == {}
    with pytest.raises(SchedulerOutputError, match="unreadable JSON"):
        pbs.parse_status("qstat: garbled \x00 output", "", 0)  # not "every job has left"


def test_directives_render_the_resource_model():
    res = Resources.create(
        queue="workq",
        account="proj",
        time="1-02:03:04",
        nodes=2,
        ppn=4,
        threads=8,
        mem="4GB",
        gpus=1,
        native=["-l place=excl", "#PBS -m abe"],
    )
    spec = SubmitSpec(
        "/a/submit.sh",
        res,
        "my job",
        "/a/^array_index^.out",
        "/a/^array_index^.err",
        "/w",
        array_size=10,
        array_limit=3,
        hold=True,
        after=("5.srv", "7[2].srv", "7[3].srv"),
    )
    assert pbs.directives(spec) == [
        "#PBS -N my_job",
        "#PBS -o /a/^array_index^.out",
        "#PBS -e /a/^array_index^.err",
        "#PBS -q workq",
        "#PBS -A proj",
        "#PBS -l select=2:ncpus=32:mpiprocs=4:ompthreads=8:mem=4096mb:ngpus=1",
        "#PBS -l place=scatter",
        "#PBS -l walltime=26:03:04",
        "#PBS -J 0-9%3",
        "#PBS -h",
        "#PBS -W depend=afterok:5.srv:7[].srv",  # PBS cannot depend on one array element
        "#PBS -l place=excl",
        "#PBS -m abe",
    ]
    plain = SubmitSpec(
        "/a b/submit.sh", Resources.create(mem=500), "x", "/a b/out", "/a b/err", "/w"
    )
    assert pbs.directives(plain) == [
        "#PBS -N x",
        '#PBS -o "/a b/out"',
        '#PBS -e "/a b/err"',
        "#PBS -l select=1:mem=500mb",
    ]
    with pytest.raises(BackendError, match="at least two"):
        pbs.directives(SubmitSpec("/s", Resources(), "x", "/o", "/e", "/w", array_size=1))
    assert pbs.submit_argv(plain) == ["qsub", "/a b/submit.sh"]


def test_check_refuses_other_schedulers_directives():
    pbs.check(Resources.create(native=["#PBS -l place=excl", "-m n"]))
    with pytest.raises(BackendError, match="not a PBS Pro directive"):
        pbs.check(Resources.create(native=["#SBATCH --exclusive"]))


def test_job_script_reads_the_pbs_variables(tmp_path):
    nodes = tmp_path / "nodefile"
    nodes.write_text("n1\nn1\nn2\n")
    parts = pbs.script_parts(
        Resources(),
        name="x",
        jobdir=str(tmp_path),
        stdout="out",
        stderr="err",
        workdir=str(tmp_path),
    )
    script = render(
        parts,
        Resources(),
        jobdir=str(tmp_path),
        workdir=str(tmp_path),
        submit_host="h",
        name="x",
        shell_body='echo "$HPCEXEC_JOB_ID|$HPCEXEC_ARRAY_INDEX|$HPCEXEC_NODELIST"',
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "PBS_JOBID": "12[3].srv",
        "PBS_ARRAY_INDEX": "3",
        "PBS_NODEFILE": str(nodes),
    }
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert out.stdout == "12[3].srv|3|n1,n2\n"


def test_cancel_hold_release_and_max_array():
    assert pbs.cancel_argv(["1.s", "2.s"]) == ["qdel", "1.s", "2.s"]
    assert pbs.hold_argv(["1.s"]) == ["qhold", "1.s"]
    assert pbs.release_argv(["1.s"]) == ["qrls", "1.s"]
    assert pbs.parse_max_array("Server pbs01\n    max_array_size = 10000\n") == 10000
    assert pbs.parse_max_array("Server pbs01\n") is None
