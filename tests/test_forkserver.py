"""Warm starts of local Python jobs: the same job as from its script, only faster."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import jobfns
import pytest

import hpcexec
from hpcexec import JobFailed, forkserver

PROBE = (
    "HPCEXEC_JOB_ID",
    "HPCEXEC_JOB_NAME",
    "HPCEXEC_WORKDIR",
    "HPCEXEC_SUBMIT_HOST",
    "HPCEXEC_NODELIST",
    "HPCEXEC_ARRAY_INDEX",
    "PROBE_VALUE",
)


def probe():
    print("to stdout")
    print("to stderr", file=sys.stderr)
    return {
        "env": {k: os.environ.get(k) for k in PROBE},
        "cwd": os.getcwd(),
        "path0": sys.path[0],
        "pid": os.getpid(),
        "sid": os.getsid(0),
    }


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "script"])
def test_warm_and_script_starts_give_the_job_the_same_world(ex, tmp_path, warm):
    ex.session.transport.warm_start = warm
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    f = ex.options(name="probe", workdir=str(workdir), env={"PROBE_VALUE": "a b'c"}).submit(probe)
    got = f.result(timeout=30)
    assert got["env"] == {
        "HPCEXEC_JOB_ID": f.job_id,
        "HPCEXEC_JOB_NAME": "probe",
        "HPCEXEC_WORKDIR": str(workdir),
        "HPCEXEC_SUBMIT_HOST": ex.session.host,
        "HPCEXEC_NODELIST": ex.session.host,
        "HPCEXEC_ARRAY_INDEX": "",
        "PROBE_VALUE": "a b'c",
    }
    assert got["cwd"] == str(workdir) and got["path0"] == str(workdir)
    assert got["sid"] == got["pid"], "a job leads its own session"
    assert int(f.job_id.split(":")[0]) == got["pid"]
    assert f.stdout() == "to stdout\n" and f.stderr() == "to stderr\n"
    assert (f.record.path / "started").read_text().split("\n")[0] == f.job_id


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "script"])
def test_job_killed_by_a_signal_reports_it(ex, warm):
    ex.session.transport.warm_start = warm
    f = ex.submit(jobfns.sleep_then, 30)
    deadline = time.monotonic() + 10
    while not f.running() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(int(f.job_id.split(":")[0]), signal.SIGKILL)
    with pytest.raises(JobFailed) as info:
        f.result(timeout=15)
    assert info.value.signal == signal.SIGKILL and "SIGKILL" in info.value.reason


def test_jobs_outlive_the_fork_server(ex):
    f = ex.submit(jobfns.sleep_then, 1.0, "survived")
    deadline = time.monotonic() + 10
    while not f.running() and time.monotonic() < deadline:
        time.sleep(0.02)
    job_pid = int(f.job_id.split(":")[0])
    stat = Path(f"/proc/{job_pid}/stat").read_text()
    server = int(stat[stat.rfind(")") + 2 :].split()[1])  # the job's parent
    cmdline = Path(f"/proc/{server}/cmdline").read_text()
    assert forkserver.server_prefix(sys.executable) in cmdline, "started by a fork server"
    os.kill(server, signal.SIGKILL)
    assert f.result(timeout=30) == "survived"
    # the next job starts a new server
    assert ex.submit(jobfns.double, 2).result(timeout=30) == 4


def test_server_answers_only_its_own_user(tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root to connect as another user")
    name = forkserver.server_name(sys.executable, {})
    forkserver.spawn(
        sys.executable,
        {
            "jobdir": str(tmp_path),
            "cwd": str(tmp_path),
            "stdout": os.devnull,
            "stderr": os.devnull,
            "env": {},
        },
    )  # make sure it runs
    # Everything is imported before dropping to 'nobody', who cannot read this interpreter's files.
    code = (
        "import os, socket; os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        f"s.connect('\\0' + {name!r})\n"
        "print(s.recv(65536).decode())"
    )  # refused before any request is read
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "own user only" in out.stdout, out.stderr


def test_a_server_that_went_idle_under_a_connecting_client_is_replaced(tmp_path):
    """A server exiting idle while a client's connection waits in its backlog resets that
    connection before reading the request: the client starts a new server."""
    name = forkserver.server_name(sys.executable, {})
    forkserver.stop(sys.executable)
    going = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # plays the server going away
    deadline = time.monotonic() + 10
    while True:
        try:
            going.bind("\0" + name)
            break
        except OSError:  # the stopped server still holds the name for a moment
            assert time.monotonic() < deadline
            time.sleep(0.02)
    going.listen(1)
    threading.Timer(0.5, going.close).start()  # never accepts: the client waits in the backlog
    pid = forkserver.spawn(
        sys.executable,
        {
            "jobdir": str(tmp_path),
            "key": os.devnull,
            "cwd": str(tmp_path),
            "stdout": os.devnull,
            "stderr": os.devnull,
            "env": {},
        },
    )
    assert pid > 0


def test_idle_server_exits(tmp_path):
    name = f"hpcexec-test-{uuid.uuid4().hex}"
    env = {**os.environ, "HPCEXEC_FORKSERVER_IDLE": "0.5"}
    p = subprocess.Popen([sys.executable, "-m", "hpcexec.forkserver", name], env=env)
    assert p.wait(timeout=15) == 0


def test_server_that_cannot_start_is_reported_fast(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'No module named hpcexec' >&2\nexit 1\n")
    fake.chmod(0o755)
    t = time.monotonic()
    with pytest.raises(OSError, match="failed to start: No module named hpcexec"):
        forkserver.spawn(str(fake), {})
    assert time.monotonic() - t < 4


def test_unusable_fork_server_falls_back_to_the_script(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(forkserver, "spawn", lambda *a: (_ for _ in ()).throw(OSError("nope")))
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.02) as ex:
        assert ex.submit(jobfns.double, 21).result(timeout=30) == 42
        assert ex.session.transport.warm_start is False


def test_a_warm_jobs_process_group_exists_when_spawn_returns(tmp_path):
    """The client may signal the job's group (terminate) as soon as it has the pid: the
    child is its own session leader by then."""
    missing = 0
    for i in range(40):
        jobdir = tmp_path / f"job{i}"
        jobdir.mkdir()
        pid = forkserver.spawn(
            sys.executable,
            {
                "jobdir": str(jobdir),
                "key": os.devnull,
                "cwd": str(tmp_path / "gone"),  # the child ends at once, saying why
                "stdout": os.devnull,
                "stderr": os.devnull,
                "env": {},
            },
        )
        try:
            if os.getpgid(pid) != pid:
                missing += 1
        except ProcessLookupError:  # ended already: it was a session leader by then
            pass
    assert missing == 0, f"{missing} of 40 children were not yet their own group"
