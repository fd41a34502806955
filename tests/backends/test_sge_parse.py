"""Grid Engine's parse and render functions against output recorded from the live SGE 8.1.9
(tests/clusters/recorded/sge_*.txt, each file naming the command that produced it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from recorded_output import read_output

from hpcexec.backends import SCHEDULERS
from hpcexec.backends.base import SubmitSpec
from hpcexec.backends.sge import ACCT_IDS_PER_CALL, SgeBackend, job_name
from hpcexec.errors import BackendError, SchedulerOutputError, SubmitError
from hpcexec.resources import Resources
from hpcexec.script import render
from hpcexec.states import JobState

RECORDED = Path(__file__).parent.parent / "clusters" / "recorded"
sge = SgeBackend()


def recorded(name: str) -> str:
    return read_output(RECORDED / name)


def test_registered_after_slurm():
    names = list(SCHEDULERS)
    assert SCHEDULERS["sge"] is SgeBackend
    assert names.index("sge") == names.index("slurm") + 1
    assert SgeBackend.commands == ("qsub", "qstat", "qacct")


# -- submit -------------------------------------------------------------------------------------
def test_submit_output_gives_the_job_number():
    assert sge.parse_submit(recorded("sge_qsub_terse.txt")) == "9"
    assert sge.parse_submit(recorded("sge_qsub_terse_array.txt")) == "20"  # "20.1-3:1"
    assert sge.parse_submit(recorded("sge_qsub_submit.txt")) == "8"
    assert sge.parse_submit(recorded("sge_qsub_array.txt")) == "19"
    with pytest.raises(SubmitError, match="Error reading answer list"):
        sge.parse_submit(recorded("sge_qsub_job_name_with_space_error.txt"))
    assert sge.submit_argv(_spec()) == ["qsub", "-terse", "/c/s.sh"]


def test_element_ids_are_one_based_task_ids():
    assert sge.element_id("20", 0) == "20.1"
    assert sge.element_id("20", 9) == "20.10"
    assert SgeBackend.array_index_base == 1 and SgeBackend.array_index_pattern == "$TASK_ID"


# -- qstat --------------------------------------------------------------------------------------
def test_qstat_running_and_pending_states():
    got = sge.parse_status(recorded("sge_qstat_xml_running_pending.txt"), "", 0)
    assert set(got) == {"11", "12", "14", "15", "16"}
    assert got["11"].state is JobState.RUNNING and got["11"].nodelist == "vm"
    assert got["14"].state is JobState.PENDING and got["14"].nodelist is None
    assert got["15"].state is JobState.PENDING
    assert got["12"].state is JobState.HELD
    # Without -r there is no predecessor list: a -hold_jid job looks held.
    assert got["16"].state is JobState.HELD


def test_qstat_running_array_tasks_are_elements():
    got = sge.parse_status(recorded("sge_qstat_xml_array_running.txt"), "", 0)
    assert sorted(got) == ["20.1", "20.2", "20.3"]
    assert all(s.state is JobState.RUNNING for s in got.values())


def test_qstat_pending_ranges_held_tasks_dependencies_and_error_state():
    got = sge.parse_status(recorded("sge_qstat_xml_r_array_held_dependency_error.txt"), "", 0)
    assert [got[f"74.{t}"].state for t in range(1, 7)] == [
        JobState.RUNNING,
        JobState.RUNNING,
        JobState.PENDING,
        JobState.PENDING,
        JobState.HELD,
        JobState.HELD,
    ]
    assert "74" not in got
    assert got["75"].state is JobState.HELD and got["75"].reason is None
    dep = got["76"]  # hqw, but only waiting for -hold_jid 74
    assert dep.state is JobState.PENDING and dep.reason == "waiting for job(s) 74"
    eqw = got["77"]
    assert eqw.state is JobState.HELD and "error state" in eqw.reason and "qmod -cj" in eqw.reason


def test_qstat_pending_range_is_expanded():
    got = sge.parse_status(recorded("sge_qstat_xml_r_array_pending_range.txt"), "", 0)
    assert [got[f"78.{t}"].state for t in range(1, 11)] == (
        [JobState.RUNNING] * 2 + [JobState.PENDING] * 8
    )
    assert "78.11" not in got and "78.0" not in got


@pytest.mark.parametrize(
    "code, state",
    [
        ("r", JobState.RUNNING),
        ("t", JobState.RUNNING),
        ("Rr", JobState.RUNNING),
        ("dr", JobState.RUNNING),
        ("qw", JobState.PENDING),
        ("hqw", JobState.HELD),
        ("hRwq", JobState.HELD),
        ("Eqw", JobState.HELD),
        ("s", JobState.SUSPENDED),
        ("S", JobState.SUSPENDED),
        ("T", JobState.SUSPENDED),
        ("dqw", JobState.PENDING),
    ],
)
def test_state_codes(code, state):
    xml = (
        f"<job_info><job_info><job_list><JB_job_number>5</JB_job_number><state>{code}"
        "</state><tasks>1-5:2,8</tasks></job_list></job_info></job_info>"
    )
    got = sge.parse_status(xml, "", 0)
    assert sorted(got) == ["5.1", "5.3", "5.5", "5.8"]
    assert got["5.3"].state is state
    assert got["5.3"].ending is ("d" in code)  # being deleted: how it ends is qdel's


def test_qstat_asks_for_this_users_jobs_and_fails_whole_when_qmaster_is_away():
    assert sge.status_argv(["12.3", "9"]) == ["qstat", "-xml", "-r", "-u", "$user"]
    with pytest.raises(SchedulerOutputError, match="commlib error"):
        sge.parse_status("", recorded("sge_qstat_qmaster_unreachable.txt"), 1)
    with pytest.raises(SchedulerOutputError):
        sge.parse_status("", "", 0)  # no XML at all is not "no jobs"
    empty = (
        "<?xml version='1.0'?>\n<job_info><queue_info></queue_info><job_info></job_info></job_info>"
    )
    assert sge.parse_status(empty, "", 0) == {}


# -- qacct --------------------------------------------------------------------------------------
def test_qacct_completed_and_failed():
    done = sge.parse_accounting(recorded("sge_qacct_completed.txt"))["8"]
    assert (done.state, done.exit_code, done.signal) == (JobState.COMPLETED, 0, None)
    assert done.nodelist == "vm" and done.elapsed == 0 and done.max_rss == 4
    failed = sge.parse_accounting(recorded("sge_qacct_exit3.txt"))["6"]
    assert (failed.state, failed.exit_code, failed.reason) == (JobState.FAILED, 3, None)
    # "exit 137" from the script itself is a normal exit: failed 0.
    normal = sge.parse_accounting(recorded("sge_qacct_exit137.txt"))["70"]
    assert (normal.state, normal.exit_code, normal.signal) == (JobState.FAILED, 137, None)


def test_qacct_walltime_is_timeout():
    for name, number, elapsed in [
        ("sge_qacct_h_rt_exceeded.txt", "17", 4),
        ("sge_qacct_h_rt_20s.txt", "64", 20),
    ]:
        st = sge.parse_accounting(recorded(name))[number]
        assert st.state is JobState.TIMEOUT and "walltime" in st.reason
        assert st.exit_code == 137 and st.signal == 9 and st.elapsed == elapsed


def test_qacct_qdel_is_cancelled_and_a_self_kill_too():
    st = sge.parse_accounting(recorded("sge_qacct_qdel_running.txt"))["18"]
    assert (st.state, st.signal, st.reason) == (JobState.CANCELLED, 9, None)
    assert st.elapsed == 2 and st.max_rss == 4
    # SGE writes the same "failed 100" for any SIGKILL of the job's process.
    own = sge.parse_accounting(recorded("sge_qacct_self_kill9.txt"))["68"]
    assert own.state is JobState.CANCELLED


def test_qacct_other_signals_fail():
    text = recorded("sge_qacct_self_kill9.txt").replace(
        "137                  (Killed)", "143                  (Terminated)"
    )
    st = sge.parse_accounting(text)["68"]
    assert (st.state, st.signal, st.reason) == (JobState.FAILED, 15, "killed by signal 15")


def test_qacct_execd_h_rt_kill_is_timeout():
    # failed 100 (killed) after the job's h_rt: execd enforced the limit, not qmaster.
    text = recorded("sge_qacct_qdel_running.txt").replace(
        "category     NONE", "category     -l h_rt=2"
    )
    assert sge.parse_accounting(text)["18"].state is JobState.TIMEOUT
    text = recorded("sge_qacct_qdel_running.txt").replace(
        "category     NONE", "category     -l h_rt=00:01:00"
    )
    assert sge.parse_accounting(text)["18"].state is JobState.CANCELLED


def test_qacct_sge_failure_codes_fail_with_sges_words():
    st = sge.parse_accounting(recorded("sge_qacct_eqw_output_file.txt"))["77"]
    assert st.state is JobState.FAILED and st.exit_code is None
    assert st.reason == "SGE could not run the job (failed 26  : opening input/output file)"


def test_qacct_array_tasks_are_elements():
    got = sge.parse_accounting(recorded("sge_qacct_array.txt"))
    assert sorted(got, key=lambda j: int(j.split(".")[1])) == [f"19.{t}" for t in range(1, 11)]
    assert all(s.state is JobState.COMPLETED for s in got.values())
    assert got["19.6"].max_rss == 4
    mixed = sge.parse_accounting(recorded("sge_qacct_array_qdel_running_and_pending.txt"))
    assert sorted(mixed) == ["74.1", "74.2", "74.3", "74.4"]  # 5, 6: deleted while pending
    assert [mixed[f"74.{t}"].state for t in range(1, 5)] == [
        JobState.COMPLETED,
        JobState.COMPLETED,
        JobState.CANCELLED,
        JobState.CANCELLED,
    ]
    assert mixed["74.1"].elapsed == 41


def test_qacct_reused_job_number_keeps_the_newest_record_and_unknown_is_empty():
    text = recorded("sge_qacct_job_id_reused_after_qmaster_kill.txt")
    last = text.rindex("ru_wallclock")
    text = text[:last] + text[last:].replace("ru_wallclock 1s", "ru_wallclock 7s", 1)
    assert sge.parse_accounting(text)["21"].elapsed == 7
    assert sge.parse_accounting(recorded("sge_qacct_unknown_job.txt")) == {}


def test_max_rss_reads_ru_maxrss_as_kib():
    # 'python3 -c "bytearray(200 MiB)"' showed ru_maxrss 213.137KB, maxvmem 216.715MB.
    text = recorded("sge_qacct_completed.txt").replace(
        "ru_maxrss    4.379KB", "ru_maxrss    213.137KB"
    )
    assert sge.parse_accounting(text)["8"].max_rss == 213
    no_rss = (
        recorded("sge_qacct_array.txt")
        .split("=" * 62)[6]
        .replace("ru_maxrss    4.488KB", "ru_maxrss    0.000B")
    )
    assert sge.parse_accounting(no_rss)["19.6"].max_rss == 15  # maxvmem 15.152MB


def test_accounting_argv_one_job_number_or_a_loop():
    assert sge.accounting_argv(["12"]) == ["qacct", "-j", "12"]
    assert sge.accounting_argv(["12.1", "12.3", "12.10"]) == ["qacct", "-j", "12"]
    argv = sge.accounting_argv(["13", "12.1", "9"])
    assert argv[:2] == ["sh", "-c"] and argv[3:] == ["sh", "9", "12", "13"]
    many = sge.accounting_argv([str(n) for n in range(100, 200)])
    assert many[4:] == [str(n) for n in range(100, 100 + ACCT_IDS_PER_CALL)]


def test_accounting_loop_runs_every_qacct_even_when_one_fails(tmp_path):
    fake = tmp_path / "qacct"
    fake.write_text(
        '#!/bin/sh\nif [ "$2" = 12 ]; then echo "error: job id 12 not found" >&2; '
        'exit 1; fi\necho "jobnumber $2"\n'
    )
    fake.chmod(0o755)
    argv = sge.accounting_argv(["13", "12", "9"])
    r = subprocess.run(
        argv, capture_output=True, text=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"}
    )
    assert r.returncode == 0 and r.stdout == "jobnumber 9\njobnumber 13\n"


# -- find, max array, control -------------------------------------------------------------------
def test_find_maps_scripts_to_jobs():
    assert sge.find_argv() == ["qstat", "-xml", "-j", "*"]
    got = sge.parse_find(recorded("sge_qstat_xml_j_all.txt"))
    assert got == {"/tmp/sgex/sub.sh": "83"}  # 82 and 83 ran the same script: the newest
    assert sge.parse_find(recorded("sge_qstat_xml_j_all_no_jobs.txt")) == {}


def test_max_array_from_global_config():
    assert sge.parse_max_array(recorded("sge_qconf_sconf.txt")) == 75000
    assert sge.parse_max_array("max_aj_tasks                 0\n") is None
    assert sge.max_array_argv() == ["qconf", "-sconf"]


def test_control_commands_take_task_ids():
    assert sge.cancel_argv(["12.3", "9"]) == ["qdel", "12.3", "9"]
    assert sge.hold_argv(["12.3"]) == ["qhold", "12.3"]
    assert sge.release_argv(["12.3"]) == ["qrls", "12.3"]


# -- render -------------------------------------------------------------------------------------
def _spec(res=None, **kw):
    return SubmitSpec(
        "/c/s.sh",
        res or Resources(),
        kw.pop("name", "job"),
        kw.pop("stdout", "/o/out"),
        kw.pop("stderr", "/o/err"),
        kw.pop("workdir", "/w"),
        **kw,
    )


def test_directives_render_the_resource_model():
    res = Resources.create(
        queue="all.q",
        account="proj",
        time="1-02:03:04",
        soft_time="1-00:00:00",
        mem="4GB",
        native=["-l arch=lx-amd64", "#$ -P myproject"],
    )
    lines = sge.directives(
        _spec(
            res,
            name="my job",
            workdir="/work dir",
            array_size=10,
            array_limit=3,
            hold=True,
            after=("5", "6.2", "6.3"),
        )
    )
    assert lines == [
        "#$ -N my_job",
        "#$ -S /bin/bash",
        "#$ -V",
        "#$ -o /o/out",
        "#$ -e /o/err",
        '#$ -wd "/work dir"',
        "#$ -q all.q",
        "#$ -A proj",
        "#$ -l h_rt=26:03:04",
        "#$ -l s_rt=24:00:00",  # SIGUSR1 there (DRMAA's soft wallclock limit)
        "#$ -l h_vmem=4096M",
        "#$ -t 1-10",
        "#$ -tc 3",
        "#$ -h",
        "#$ -hold_jid 5,6",
        "#$ -l arch=lx-amd64",
        "#$ -P myproject",
    ]
    assert sge.directives(_spec()) == [
        "#$ -N job",
        "#$ -S /bin/bash",
        "#$ -V",
        "#$ -o /o/out",
        "#$ -e /o/err",
        "#$ -wd /w",
    ]


def test_parallel_environment_gets_the_slot_count_and_memory_per_slot():
    res = Resources.create(nodes=2, ppn=2, threads=4, mem="16G", native="-pe mpi")
    sge.check(res)
    lines = sge.directives(_spec(res))
    assert "#$ -pe mpi 16" in lines and "#$ -l h_vmem=2048M" in lines
    given = Resources.create(threads=4, native="#$ -pe smp 2-4")
    sge.check(given)
    assert sge.directives(_spec(given))[-1] == "#$ -pe smp 2-4"


def test_check_refuses_what_sge_cannot_express():
    for res in (Resources.create(threads=2), Resources.create(ppn=2), Resources.create(nodes=2)):
        with pytest.raises(BackendError, match="parallel environment"):
            sge.check(res)
    with pytest.raises(BackendError, match="GPU"):
        sge.check(Resources.create(gpus=1))
    with pytest.raises(BackendError, match="names no parallel environment"):
        sge.check(Resources.create(threads=2, native="-pe"))
    with pytest.raises(BackendError, match="quote"):
        sge.check(Resources.create(stdout="/tmp/it's/out"))
    sge.check(Resources.create(time="1:00:00", mem="1G", queue="all.q", gpus=0))


def test_paths_with_quotes_are_refused_at_submit_and_spaces_quoted():
    with pytest.raises(BackendError, match="quote"):
        sge.script_parts(
            Resources(), name="x", jobdir='/c/"a"/j', stdout="/o", stderr="/e", workdir="/w"
        )
    with pytest.raises(BackendError, match="quote"):
        sge.directives(_spec(workdir="/it's"))
    assert '#$ -o "/a b/$TASK_ID.out"' in sge.directives(_spec(stdout="/a b/$TASK_ID.out"))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("my job", "my_job"),
        ("a/b:c@d", "a_b_c_d"),
        ("1abc", "_1abc"),
        ("none", "none_"),
        ("TEMPLATE", "TEMPLATE_"),
        ("é", "_"),
        ("f[0:10]", "f_0_10_"),
        ("a*b?\\c", "a_b__c"),
        ("ok-name_1.2+x", "ok-name_1.2+x"),
    ],
)
def test_job_names_are_made_acceptable(name, expected):
    assert job_name(name) == expected


def test_script_sets_the_core_variables(tmp_path):
    parts = sge.script_parts(
        Resources(), name="n", jobdir=str(tmp_path), stdout="/o", stderr="/e", workdir=str(tmp_path)
    )
    script = tmp_path / "job.sh"
    script.write_text(
        render(
            parts,
            Resources(),
            jobdir=str(tmp_path),
            workdir=str(tmp_path),
            submit_host="h",
            name="n",
            shell_body='echo "$HPCEXEC_JOB_ID|$HPCEXEC_ARRAY_INDEX|$HPCEXEC_NODELIST"',
        )
    )
    hostfile = tmp_path / "pe_hostfile"
    hostfile.write_text("node1 4 all.q@node1 UNDEFINED\nnode2 4 all.q@node2 UNDEFINED\n")

    def run(**env):
        return subprocess.run(
            ["bash", str(script)],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "HOSTNAME": "vm", **env},
        ).stdout

    assert run(JOB_ID="12", SGE_TASK_ID="undefined") == "12||vm\n"
    assert run(JOB_ID="12", SGE_TASK_ID="3") == "12.3|2|vm\n"
    assert (
        run(JOB_ID="12", SGE_TASK_ID="undefined", PE_HOSTFILE=str(hostfile)) == "12||node1,node2\n"
    )
    # the driver's element index expression, as the array body uses it
    body = f'a=(x y z); echo "${{a[{SgeBackend.array_index_expr}]}}"'
    assert (
        subprocess.run(
            ["bash", "-c", body], capture_output=True, text=True, env={"SGE_TASK_ID": "3"}
        ).stdout
        == "z\n"
    )
