"""Jobs on another host: the Executor drives the live SLURM through the loopback sshd.
What every scheduler shares runs through SSH too, in test_live_common.py ("slurm-ssh")."""

from __future__ import annotations

import sys
import threading
import time

import jobfns
import pytest
from livecluster import _executor
from sshtest import (
    KEY,
    KNOWN,
    MISMATCH,
    PORT,
    PORT2,
    Exchanges,
    drop_connection,
    established,
    restart_sshd,
)

import hpcexec
from hpcexec.errors import BackendError, HostKeyError, ResourceError, TransportError
from hpcexec.transport import sshconfig

pytestmark = [pytest.mark.slurm, pytest.mark.ssh]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A bare local home: the user's own ssh config, keys, agent and known hosts play no part."""
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setattr(sshconfig, "GLOBAL_KNOWN_HOSTS", ())
    return h


def test_records_remember_the_host_and_shell_jobs_run_in_the_remote_dir(rex, remote_options):
    f = rex.submit_shell("pwd")
    assert f.result(timeout=120).stdout.strip() == remote_options["remote_dir"]
    assert f.record.host == remote_options["host"] and f.record.backend == "slurm"
    assert f.record.jobdir.startswith(remote_options["remote_dir"] + "/jobs/")


def test_ssh_config_alias(slurm_cluster, sshd, home, cache, tmp_path):
    (home / ".ssh" / "config").write_text(
        f"Host testcluster\n  HostName 127.0.0.1\n  Port {PORT}\n  User root\n"
        f"  IdentityFile {KEY}\n  UserKnownHostsFile {KNOWN}\n"
    )
    for ex in _executor(
        "slurm",
        cache,
        host="testcluster",
        python=sys.executable,
        remote_dir=str(tmp_path / "remote"),
    ):
        f = ex.submit(jobfns.add, 2, 3)
        assert f.result(timeout=120) == 5
        assert f.record.host == "testcluster"


def test_unknown_host_key_is_refused_and_nothing_is_written(slurm_cluster, sshd, cache):
    with pytest.raises(HostKeyError, match="ssh-keyscan") as info:
        hpcexec.Executor(
            "slurm",
            cache_dir=cache,
            host=f"root@127.0.0.1:{PORT2}",
            ssh_key=str(KEY),
            known_hosts=str(MISMATCH),
        )
    assert str(PORT2) in str(info.value)
    assert not any(cache.glob("jobs/*"))


def test_a_remote_python_without_hpcexec_says_what_to_install(slurm_cluster, remote_options, cache):
    # Debian's own Python: neither hpcexec nor cloudpickle is installed for it.
    opts = {**remote_options, "python": "/usr/bin/python3"}
    with pytest.raises(BackendError, match=r"lacks hpcexec and cloudpickle") as info:
        hpcexec.Executor("slurm", cache_dir=cache, **opts)
    assert f"/usr/bin/python3 -m pip install 'hpcexec=={hpcexec.__version__}'" in str(info.value)
    with pytest.raises(BackendError, match="cannot run the remote Python"):
        hpcexec.Executor("slurm", cache_dir=cache, **{**opts, "python": "/no/such/python"})


def test_options_that_need_a_host_or_a_scheduler(remote_options, cache):
    with pytest.raises(ResourceError, match=r"remote_dir.*host="):
        hpcexec.Executor("slurm", cache_dir=cache, remote_dir="/tmp/x")
    with pytest.raises(BackendError, match="local backend runs jobs on this machine"):
        hpcexec.Executor("local", cache_dir=cache, **remote_options)


def test_one_tcp_connection_for_a_whole_map(rex):
    rex.session.transport.which("sbatch")  # connected (it was, to check the remote Python)
    before = established(PORT)  # this executor's connection, and any other test's still open
    seen: list[int] = []
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            seen.append(established(PORT))
            time.sleep(0.05)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        assert list(rex.map(jobfns.double, range(30), timeout=180)) == [2 * x for x in range(30)]
    finally:
        stop.set()
        counter.join()
    assert max(seen) == before  # no second connection, not even for a moment
    assert rex.session.transport.connections_opened == 1


def test_a_loop_of_submits_is_staged_in_a_few_exchanges(rex, monkeypatch):
    """Separate submits are gathered into shared submissions (hpcexec.gathering): 40 of them
    cost fewer SFTP round trips than jobs, not the eight or so each costs on its own."""
    rex.session.transport.which("sbatch")  # connected
    trips = Exchanges(monkeypatch)
    fs = [rex.submit_shell(f"echo {i}") for i in range(40)]
    assert [f.record.name for f in fs[:1]] == ["echo"]  # asking for a record submits
    assert trips.count < 40
    assert [f.result(timeout=180).stdout for f in fs] == [f"{i}\n" for i in range(40)]


def test_sshd_restarted_while_jobs_run(rex):
    fs = [rex.submit(jobfns.sleep_then, 3, i) for i in range(4)]
    deadline = time.monotonic() + 60
    while not all(f.job_id for f in fs) and time.monotonic() < deadline:
        time.sleep(0.1)
    restart_sshd()
    drop_connection(rex.session.transport)  # a restarted sshd leaves old sessions: end ours
    assert [f.result(timeout=180) for f in fs] == list(range(4))
    assert rex.session.transport.connections_opened == 2


def test_submission_cut_off_by_a_dropped_connection_is_not_repeated(rex, monkeypatch):
    transport = rex.session.transport
    real_run = transport.run

    def run(argv, **kw):
        out = real_run(argv, **kw)
        if argv[0] == "sbatch":  # it reached SLURM, but the answer is lost
            monkeypatch.setattr(transport, "run", real_run)
            raise TransportError("connection dropped while running sbatch")
        return out

    monkeypatch.setattr(transport, "run", run)
    fs = [rex.submit(jobfns.add, i, 1) for i in range(3)]
    assert [f.result(timeout=180) for f in fs] == [1, 2, 3]
    assert rex.session.calls["sbatch"] == 1  # found in the queue and adopted


def test_a_rerun_reattaches_to_running_jobs(rex, remote_options, cache):
    f = rex.submit(jobfns.sleep_then, 4, "late")
    while not f.job_id:
        time.sleep(0.1)
    with hpcexec.Executor(
        "slurm", cache_dir=cache, poll_interval=0.2, time="0:10:00", **remote_options
    ) as again:
        g = again.submit(jobfns.sleep_then, 4, "late")
        assert g.key == f.key and g.job_id == f.job_id
        assert g.result(timeout=120) == "late"
        assert again.session.calls["sbatch"] == 0


def test_a_result_that_cannot_be_fetched_at_first_arrives_later(rex, monkeypatch):
    transport = rex.session.transport
    real_read = transport.read_bytes
    refused: list[str] = []

    def read_bytes(path):
        if path.endswith("/result.pkl") and not refused:
            refused.append(path)
            raise TransportError("connection dropped while reading")
        return real_read(path)

    monkeypatch.setattr(transport, "read_bytes", read_bytes)
    assert rex.submit(jobfns.add, 1, 2).result(timeout=120) == 3
    assert refused


def test_the_first_array_in_a_new_remote_dir_is_staged_in_a_few_exchanges(rex, monkeypatch):
    """An array's directory goes with its parent where this client has made none yet: one
    more level of the same exchange, not each directory made again one level at a time."""
    transport = rex.session.transport
    transport.which("sbatch")  # connected
    trips = Exchanges(monkeypatch)
    real, counted = transport.stage, []

    def stage(dirs, files, links=None):
        before = trips.count
        real(dirs, files, links)
        if any("/arrays/" in d for d in dirs):
            counted.append(trips.count - before)

    monkeypatch.setattr(transport, "stage", stage)
    assert list(rex.map(jobfns.double, range(4))) == [0, 2, 4, 6]
    assert list(rex.map(jobfns.double, range(4, 8))) == [8, 10, 12, 14]
    # arrays/, the array's own directory, its claims/; the files and links in two more
    assert counted == [5, 4]
