"""Torque's parse and render functions against recorded real output
(tests/fixtures/torque/, each file naming its source)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from recorded_output import read_output

from hpcexec.backends.base import SubmitSpec
from hpcexec.backends.torque import TorqueBackend
from hpcexec.errors import BackendError, SchedulerOutputError
from hpcexec.resources import Resources
from hpcexec.script import render
from hpcexec.states import JobState

FIXTURES = Path(__file__).parent.parent / "fixtures" / "torque"
torque = TorqueBackend()
RUNNING = "665199.superserver.stanford.edu"
QUEUED = "667999.superserver.stanford.edu"
COMPLETED = "673174.superserver.stanford.edu"
ELEMENT = "673175[19].fruster.stanford.edu"


def fixture(name: str) -> str:
    return read_output(FIXTURES / name)


def test_submit_output_and_element_ids():
    array = torque.parse_submit(fixture("qsub_array_submit.txt"))
    assert array == "1098[].hostname"
    assert [torque.element_id(array, i) for i in range(2)] == [
        "1098[0].hostname",
        "1098[1].hostname",
    ]
    # No verbatim plain-job qsub line was found; Torque prints <seq>.<server> (no brackets).
    assert torque.parse_submit("1099.hostname\n") == "1099.hostname"
    assert torque.status_argv(["1098[1].hostname", "1098[0].hostname", "77.hostname"]) == [
        "qstat",
        "-x",
        "-t",
        "77.hostname",
        "1098[].hostname",
    ]


def test_mixed_states():
    got = torque.parse_status(fixture("qstat_x_mixed_states.xml"), "", 0)
    running = got[RUNNING]  # exit_status -3 is from an earlier start: it is still running
    assert (running.state, running.exit_code, running.nodelist) == (
        JobState.RUNNING,
        None,
        "node01",
    )
    assert running.elapsed == 335 * 3600 + 34 * 60 + 49 and running.max_rss == 17
    assert got[QUEUED].state is JobState.PENDING
    done = got[COMPLETED]
    assert (done.state, done.exit_code, done.nodelist) == (JobState.COMPLETED, 0, "node04")
    element = got[ELEMENT]
    assert (element.state, element.exit_code, element.nodelist, element.elapsed) == (
        JobState.COMPLETED,
        0,
        "node11",
        1.0,
    )
    assert got["673175[20].fruster.stanford.edu"].nodelist == "node13"
    assert "673175[].superserver.stanford.edu" not in got  # the array as a whole
    assert got["673174"] == done  # without the server suffix too


@pytest.mark.parametrize(
    "name, job_id",
    [
        ("qstat_x_running.xml", RUNNING),
        ("qstat_x_queued.xml", QUEUED),
        ("qstat_x_completed.xml", COMPLETED),
        ("qstat_x_array_subjob.xml", ELEMENT),
    ],
)
def test_single_records_match_the_mixed_capture(name, job_id):
    mixed = torque.parse_status(fixture("qstat_x_mixed_states.xml"), "", 0)
    alone = torque.parse_status(fixture(name), "", 0)
    assert alone[job_id] == mixed[job_id]
    assert torque.parse_status(fixture("qstat_x_array_parent.xml"), "", 0) == {}


@pytest.mark.parametrize(
    "code, state, signal",
    [
        ("3", JobState.FAILED, None),
        ("271", JobState.FAILED, 15),  # killed with SIGTERM (qdel)
        ("265", JobState.FAILED, 9),  # the walltime kill in Torque's own tracejob example
        ("-11", JobState.TIMEOUT, None),  # JOB_EXEC_OVERLIMIT_WT
        ("-10", JobState.FAILED, None),  # JOB_EXEC_OVERLIMIT_MEM
        ("-8", JobState.FAILED, None),  # JOB_EXEC_CMDFAIL
    ],
)
def test_completed_exit_statuses(code, state, signal):
    xml = fixture("qstat_x_completed.xml").replace("<exit_status>0<", f"<exit_status>{code}<")
    st = torque.parse_status(xml, "", 0)[COMPLETED]
    assert (st.state, st.exit_code, st.signal) == (state, int(code), signal)


def test_completed_without_exit_status_never_ran():
    xml = fixture("qstat_x_completed.xml").replace("<exit_status>0</exit_status>", "")
    assert torque.parse_status(xml, "", 0)[COMPLETED].state is JobState.CANCELLED


def test_broken_xml_still_yields_the_job():
    # An unescaped '&' from a job's environment must not blind the poller to every job.
    xml = fixture("qstat_x_mixed_states.xml").replace("PBS_O_LANG=en_US.UTF-8", "PBS_O_LANG=a&b", 1)
    got = torque.parse_status(xml, "", 0)
    assert got[COMPLETED].state is JobState.COMPLETED and got[QUEUED].state is JobState.PENDING


def test_unknown_ids_empty_output_and_failures():
    assert torque.parse_status("", fixture("qstat_unknown_job.txt"), 153) == {}
    assert torque.parse_status("", "", 0) == {}  # Torque < 6.1 prints nothing for no jobs
    with pytest.raises(SchedulerOutputError, match="cannot connect"):
        torque.parse_status(
            "", "qstat: cannot connect to server torque01 (errno=111) Connection refused", 1
        )
    with pytest.raises(SchedulerOutputError):
        torque.parse_status("not xml at all", "", 0)


def test_directives_render_the_resource_model():
    res = Resources.create(
        queue="batch",
        account="proj",
        time="90",
        nodes=2,
        ppn=4,
        threads=2,
        mem="1GB",
        gpus=1,
        native=["-l naccesspolicy=singlejob"],
    )
    spec = SubmitSpec(
        "/arr/submit.sh",
        res,
        "t.sh",
        "/arr/.out",
        "/arr/.err",
        "/w",
        array_size=20,
        array_limit=5,
        hold=True,
        after=("5.srv", "6[1].srv"),
    )
    assert torque.directives(spec) == [
        "#PBS -N t.sh",
        "#PBS -o /arr/torque.out",
        "#PBS -e /arr/torque.err",
        "#PBS -q batch",
        "#PBS -A proj",
        "#PBS -l nodes=2:ppn=8:gpus=1",
        "#PBS -l mem=2048mb",  # Torque's mem is the whole job's: per node x nodes
        "#PBS -l walltime=01:30:00",
        "#PBS -t 0-19%5",
        "#PBS -h",
        "#PBS -W depend=afterok:5.srv:6[1].srv",
        "#PBS -l naccesspolicy=singlejob",
    ]
    assert torque.directives(
        SubmitSpec("/j/submit.sh", Resources(), "1st", "/j/stdout", "/j/stderr", "/w")
    ) == ["#PBS -N j1st", "#PBS -o /j/torque.out", "#PBS -e /j/torque.err"]
    with pytest.raises(BackendError):
        torque.check(Resources.create(native=["#$ -pe smp 4"]))


def test_job_script_writes_its_own_output_and_reads_torque_variables(tmp_path):
    nodes = tmp_path / "nodefile"
    nodes.write_text("n1\nn2\nn2\n")
    parts = torque.script_parts(
        Resources(),
        name="x",
        jobdir=str(tmp_path),
        stdout="o.txt",
        stderr="e.txt",
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
        "PBS_JOBID": "1098[4].hostname",
        "PBS_ARRAYID": "4",
        "PBS_NODEFILE": str(nodes),
    }
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == ""  # Torque's own -o file stays empty
    assert (tmp_path / "o.txt").read_text() == "1098[4].hostname|4|n1,n2\n"
    assert (tmp_path / "e.txt").read_text() == "oops\n"


def test_commands_and_max_array():
    assert torque.cancel_argv(["1.s"]) == ["qdel", "1.s"]
    assert torque.hold_argv(["1.s"]) == ["qhold", "1.s"]
    assert torque.release_argv(["1.s"]) == ["qrls", "1.s"]
    assert torque.parse_max_array("Server torque01\n\tmax_job_array_size = 5000\n") == 5000
