"""Prologue, epilogue and auxiliary scripts (hpcexec.hooks, run by hpcexec.epilogues), and
job_script (render without submitting), on the local backend; the live schedulers' share is in
tests/backends/test_live_scripts.py."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jobfns
import pytest

from hpcexec import JobFailed, PrologueFailed, ResourceError, ShellResult
from hpcexec.layout import SCRIPT
from hpcexec.record import JobRecord
from hpcexec.store import Store
from hpcexec.store_schema import DB_NAME, SCHEMA_VERSION

HERE = Path(__file__).parent


def test_prologue_aux_scripts_and_epilogue_around_one_job(ex, tmp_path):
    log = tmp_path / "log"
    f = ex.options(
        name="around",
        threads=1,
        prologue=f"echo prologue {{name}} {{threads}} $HPCEXEC_JOB_KEY >> {log}",
        aux_scripts={"helper.sh": "echo helper {name} {cores}"},
        epilogue=f"echo epilogue $HPCEXEC_JOB_STATE $HPCEXEC_EXIT_CODE {{name}} >> {log}; "
        f"cat $HPCEXEC_JOB_DIR/stdout >> {log}",
    ).submit_shell("bash {jobdir}/helper.sh")
    assert f.result(timeout=30) == ShellResult(0, "helper around 1\n", "")
    # The epilogue ran before the future completed, after the job ended.
    assert log.read_text().splitlines() == [
        f"prologue around 1 {f.key}",
        "epilogue completed 0 around",
        "helper around 1",
    ]
    jobdir = f.record.path
    assert (jobdir / "helper.sh").read_text() == "echo helper around 1"
    assert (jobdir / "prologue.log").read_text().startswith("exit code 0\n")
    assert (jobdir / "epilogue.log").read_text().startswith("exit code 0\n")
    assert f.record.epilogue_state == "done"
    assert "{name}" not in f.record.epilogue and "around" in f.record.epilogue


def test_epilogue_runs_for_a_failed_job_and_its_own_failure_is_only_recorded(ex, tmp_path, caplog):
    mark = tmp_path / "ran"
    f = ex.options(epilogue=f"echo $HPCEXEC_JOB_STATE > {mark}").submit_shell("exit 3")
    with pytest.raises(JobFailed):
        f.result(timeout=30)
    assert mark.read_text() == "failed\n"
    with caplog.at_level(logging.WARNING, logger="hpcexec.executor"):
        g = ex.options(epilogue="echo fetch failed >&2; exit 5").submit(jobfns.double, 4)
        assert g.result(timeout=30) == 8  # the job's result stands
    assert g.record.epilogue_state == "failed: the epilogue exited with code 5: fetch failed"
    assert "epilogue.log" in caplog.text and "fetch failed" in caplog.text
    assert "fetch failed" in (g.record.path / "epilogue.log").read_text()


def test_failing_prologue_submits_nothing(ex, tmp_path):
    with pytest.raises(
        PrologueFailed,
        match=r"prologue of job echo .* exited with code 4: no "
        r"inputs; nothing was submitted",
    ):
        ex.options(prologue="echo no inputs >&2; exit 4").submit_shell("echo never")
    assert ex.store.select() == []
    assert [p for p in (ex.cache_dir / "jobs").iterdir()] == []
    assert not ex.session.watching()


def test_keys_change_only_with_aux_scripts(ex):
    plain = ex.job_script("echo same")
    assert ex.options(prologue="true", epilogue="true").job_script("echo same") == plain
    with_aux = ex.options(aux_scripts={"a.sh": "true"}).job_script("echo same")
    assert with_aux != plain  # another key, so another job directory
    f = ex.submit_shell("echo same")
    g = ex.options(epilogue="true").submit_shell("echo same")
    assert f.key == g.key  # cached: the epilogue given later is not the record's
    f.result(timeout=30)
    g.result(timeout=30)
    assert g.record.epilogue is None


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(prologue=""), "prologue' takes shell text"),
        (dict(epilogue=3), "epilogue' takes shell text"),
        (dict(aux_scripts=["a.sh"]), "takes a mapping"),
        (dict(aux_scripts={"../a.sh": "x"}), "plain file name"),
        (dict(aux_scripts={"job.sh": "x"}), "other than hpcexec's own"),
        (dict(aux_scripts={"a.sh": b"x"}), "must be text"),
    ],
)
def test_bad_script_options_are_refused(ex, bad, message):
    with pytest.raises(ResourceError, match=message):
        ex.options(**bad)


def test_job_script_is_what_runs_and_writes_nothing(ex, tmp_path):
    body = "echo {threads} {name} > {jobdir}/x"
    shown = ex.job_script(body, threads=2, name="show")
    assert ex.store.select() == [] and list((ex.cache_dir / "jobs").iterdir()) == []
    assert "echo 2 show > " in shown and "{jobdir}" not in shown
    f = ex.options(threads=2, name="show").submit_shell(body)
    f.result(timeout=30)
    assert (f.record.path / SCRIPT).read_text() == shown
    call = ex.job_script(jobfns.add, 1, 2)
    g = ex.submit(jobfns.add, 1, 2)
    assert g.result(timeout=30) == 3
    assert (g.record.path / SCRIPT).read_text() == call
    assert "-m hpcexec.runner" in call
    with pytest.raises(ResourceError, match="shell body takes no arguments"):
        ex.job_script("echo", 1)


# -- the epilogue across a crash ------------------------------------------------------------------
CLIENT = """
import sys, hpcexec, jobfns
cache, gate, counter, out = sys.argv[1:5]
epilogue = f"echo once >> {counter}; " + (sys.argv[5] if len(sys.argv) > 5 else "")
with hpcexec.Executor(cache_dir=cache, poll_interval=0.05, epilogue=epilogue) as ex:
    value = ex.submit(jobfns.wait_for, gate, 7).result()
with open(out, "w") as f:
    f.write(str(value))
"""


def _client(tmp_path: Path, *extra: str) -> subprocess.Popen:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(tmp_path / "cache"),
            str(tmp_path / "gate"),
            str(tmp_path / "counter"),
            str(tmp_path / "out"),
            *extra,
        ],
        env=env,
        cwd=tmp_path,
    )


def _until(check, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert check()


def test_epilogue_runs_exactly_once_across_a_crash_and_reruns(tmp_path):
    proc = _client(tmp_path)
    _until(lambda: any((tmp_path / "cache" / "jobs").glob("*/started")))
    proc.send_signal(signal.SIGKILL)  # while the job runs, before any epilogue
    proc.wait()
    (tmp_path / "gate").touch()
    proc = _client(tmp_path)  # the job ends; this run runs the epilogue
    assert proc.wait(timeout=120) == 0
    assert (tmp_path / "out").read_text() == "7"
    assert (tmp_path / "counter").read_text() == "once\n"
    (tmp_path / "out").unlink()
    proc = _client(tmp_path)  # cached: neither the job nor its epilogue runs again
    assert proc.wait(timeout=120) == 0
    assert (tmp_path / "out").read_text() == "7"
    assert (tmp_path / "counter").read_text() == "once\n"
    [rec] = Store(tmp_path / "cache").select()
    assert rec.epilogue_state == "done"


def test_epilogue_cut_short_by_a_crash_is_not_run_again(tmp_path, caplog):
    (tmp_path / "gate").touch()
    pid_file = tmp_path / "in-epilogue"
    proc = _client(
        tmp_path, f"echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 600"
    )
    _until(pid_file.exists)
    proc.send_signal(signal.SIGKILL)  # the client dies inside the epilogue
    proc.wait()
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # its orphaned sleep
    [rec] = Store(tmp_path / "cache").select()
    assert rec.epilogue_state.startswith("running: ")
    with caplog.at_level(logging.WARNING, logger="hpcexec.executor"):
        proc = _client(tmp_path)
        assert proc.wait(timeout=120) == 0
    assert (tmp_path / "out").read_text() == "7"
    assert (tmp_path / "counter").read_text() == "once\n"  # at most once
    [rec] = Store(tmp_path / "cache").select()
    assert rec.epilogue_state.startswith("interrupted: the client running it (pid ")


# -- an older cache ---------------------------------------------------------------------------------
def test_a_schema_1_cache_is_migrated_and_keeps_its_records(tmp_path):
    Store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    for column in ("epilogue", "epilogue_state"):
        conn.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    conn.execute("UPDATE meta SET v = '1' WHERE k = 'schema_version'")
    conn.execute(
        "INSERT INTO jobs (key, backend, host, kind, state, modified, jobdir) "
        "VALUES ('old', 'local', 'h', 'call', 'completed', 1.0, '/x')"
    )
    conn.commit()
    conn.close()
    store = Store(tmp_path)
    rec = store.get("old")
    assert rec is not None and rec.epilogue is None and rec.epilogue_state is None
    assert store._conn().execute("SELECT v FROM meta WHERE k = 'schema_version'").fetchone()[
        0
    ] == str(SCHEMA_VERSION)
    with store.write() as tx:
        tx.put(
            JobRecord(
                key="new", backend="local", host="h", kind="shell", jobdir="/y", epilogue="true"
            )
        )
    assert store.get("new").epilogue == "true"
    store.close()
