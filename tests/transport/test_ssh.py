"""The SSH transport against the loopback sshd that tests/clusters/sshd.sh starts.

The remote is this machine as root, so every effect is checked on the local filesystem
too. ``HOME`` is a fresh directory in every test (no default keys, no ~/.ssh/known_hosts, no
agent) unless the test puts them there.
"""

from __future__ import annotations

import base64
import os
import pwd
import random
import re
import shlex
import shutil
import signal
import stat
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko
import pytest
from delaylink import DelayedLink
from livecluster import _live
from sshtest import (
    DEST,
    KEY,
    KNOWN,
    MISMATCH,
    PORT,
    PORT2,
    SSHD_DIR,
    Exchanges,
    drop_connection,
    established,
    gone,
    known_hosts_for,
    restart_sshd,
)

from hpcexec.errors import HostKeyError, TransportError
from hpcexec.transport import sshconfig
from hpcexec.transport.ssh import SSHTransport
from hpcexec.trust import PathStat

pytestmark = pytest.mark.ssh

REMOTE_HOME = Path(pwd.getpwuid(os.getuid()).pw_dir)  # sshd's HOME, not the test's
AWKWARD = "dir with 'single' \"double\" $HOME `tick` and * spaces"


@pytest.fixture(scope="session")
def sshd():
    _live("sshd")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A bare local home: the user's own keys, agent and known hosts play no part."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setattr(sshconfig, "GLOBAL_KNOWN_HOSTS", ())
    return h


@pytest.fixture
def ssh(sshd):
    t = SSHTransport(DEST, ssh_key=KEY, known_hosts=KNOWN)
    yield t
    t.close()


@pytest.fixture
def remote():
    """(the remote path as the library is given it, with ~ and awkward characters; the same
    directory on the local filesystem)."""
    top = f".hpcexec-ssh-test-{uuid.uuid4().hex[:8]}"
    yield f"~/{top}/{AWKWARD}", REMOTE_HOME / top / AWKWARD
    shutil.rmtree(REMOTE_HOME / top, ignore_errors=True)


def known_hosts_lines(port: int) -> str:
    return "".join(
        line + "\n"
        for line in KNOWN.read_text().splitlines()
        if line.startswith(f"[127.0.0.1]:{port} ")
    )


def host_key(port: int) -> str:
    return " ".join((SSHD_DIR / f"host_key_{port}.pub").read_text().split()[:2])


def fingerprint(port: int) -> str:
    kind, data = host_key(port).split()
    return paramiko.PKey.from_type_string(kind, base64.b64decode(data)).fingerprint


# -- commands ---------------------------------------------------------------------------


def test_run_captures_output_exit_status_and_stdin(ssh):
    r = ssh.run(["sh", "-c", "echo out; echo err >&2; cat; exit 3"], input="fed in\n")
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\nfed in\n", "err\n")
    assert r.argv == ("sh", "-c", "echo out; echo err >&2; cat; exit 3") and not r.ok
    assert ssh.run(["true"]).ok
    big = "x" * 2_500_000  # more than an SSH channel window (2 MiB) each way
    assert ssh.run(["cat"], input=big).stdout == big


def test_run_passes_arguments_verbatim(ssh):
    args = ["a b", "it's", '"q"', "$HOME", "`id`", "*", "semi;colon", "new\nline", "", "~/x"]
    r = ssh.run(["printf", r"[%s]\n", *args])
    assert r.stdout == "".join(f"[{a}]\n" for a in args)


def test_missing_command_is_a_transport_error(ssh):
    with pytest.raises(TransportError, match=r"command not found on .*no-such-command-hpcexec"):
        ssh.run(["no-such-command-hpcexec", "arg"])
    with pytest.raises(TransportError, match="command not found"):
        ssh.run(["/no/such/dir/prog"])
    assert ssh.which("no-such-command-hpcexec") is None
    assert ssh.which("sh") in ("/bin/sh", "/usr/bin/sh")
    # A command that exits 127 by itself is not "not found".
    assert ssh.run(["sh", "-c", "exit 127"]).returncode == 127


def test_command_timeout(ssh):
    ssh.run(["true"])
    t0 = time.monotonic()
    with pytest.raises(TransportError, match=r"timed out after 0.5 s.*sleep 30"):
        ssh.run(["sleep", "30"], timeout=0.5)
    assert time.monotonic() - t0 < 5
    # Only the command was abandoned, not the connection.
    assert ssh.run(["echo", "after"]).stdout == "after\n"
    assert ssh.connections_opened == 1


def sessions_opened(monkeypatch) -> list[int]:
    """Counts the session channels opened from now on (one per remote shell or exec)."""
    opened: list[int] = []
    real = paramiko.Transport.open_session

    def counting(self, *a, **kw):
        opened.append(1)
        return real(self, *a, **kw)

    monkeypatch.setattr(paramiko.Transport, "open_session", counting)
    return opened


def test_commands_share_one_kept_shell_and_nothing_leaks_between_them(ssh, monkeypatch):
    opened = sessions_opened(monkeypatch)
    shell_pids = {ssh._execute("echo $$", idempotent=True)[1] for _ in range(20)}
    assert len(shell_pids) == 1 and len(opened) == 1  # the login shell started once
    assert ssh._execute("cd /tmp && X=set && export Y=set", idempotent=False)[0] == 0
    status, out, _ = ssh._execute('pwd; echo "[$X][$Y]"; exit 4', idempotent=False)
    assert (status, out) == (4, f"{REMOTE_HOME}\n[][]\n")  # each command in its own subshell
    assert ssh.run(["echo", "still"]).stdout == "still\n" and len(opened) == 1


def test_input_and_output_are_exact_whatever_they_hold(ssh):
    tricky = "line\nhx0123 0\n'quoted' $HOME `id` \\ EOF\nno newline at the end"
    for text in (tricky, tricky + "\n", "\n\n", "\x00binary\x01"):
        r = ssh.run(["cat"], input=text)
        assert (r.stdout, r.returncode) == (text, 0), repr(text)
    r = ssh.run(["printf", "no newline"])
    assert r.stdout == "no newline"
    assert ssh.run(["sh", "-c", "printf err >&2"]).stderr == "err"


def test_a_shell_killed_under_a_command_is_replaced(ssh, remote):
    rdir, ldir = remote
    ssh.make_dir(rdir)
    once = shlex.quote(str(ldir / "once"))
    kill_once = f"if [ ! -e {once} ]; then : > {once}; kill -9 $$; fi; echo survived"
    with pytest.raises(TransportError, match=r"remote shell .* ended.*may or may not have run"):
        ssh._execute(kill_once, idempotent=False)
    (ldir / "once").unlink()
    assert ssh._execute(kill_once, idempotent=True)[1] == "survived\n"  # run again in a new one
    assert ssh.connections_opened == 1  # the connection itself was never lost


def test_a_server_that_keeps_no_shell_gets_a_session_per_command(ssh, monkeypatch):
    from hpcexec.transport import sshshell

    monkeypatch.setattr(sshshell, "START", "exit 0")  # as if a ForceCommand ended the shell
    opened = sessions_opened(monkeypatch)
    assert ssh.run(["echo", "a"]).stdout == "a\n"
    assert ssh.run(["sh", "-c", "cat; exit 2"], input="b").stdout == "b"
    assert ssh.persistent_shell is False and len(opened) == 3  # the failed shell, then 2 execs


def test_cpu_count_is_the_remote_nproc(ssh):
    assert ssh.cpu_count() == int(subprocess.check_output(["nproc"]))


# -- files ------------------------------------------------------------------------------


def test_stat_path_user_id_and_chmod_for_the_trust_checks(ssh, remote):
    rdir, ldir = remote
    ssh.make_dir(f"{rdir}/d")
    st = ssh.stat_path(f"{rdir}/d")
    assert (st.uid, stat.S_IMODE(st.mode), st.link) == (os.getuid(), 0o700, False)
    assert stat.S_ISDIR(st.mode) and st.target == str(ldir / "d")
    (ldir / "link").symlink_to(ldir / "d")
    st = ssh.stat_path(f"{rdir}/link")  # at the link's target, which is named
    assert st.link and stat.S_ISDIR(st.mode) and st.target == str(ldir / "d")
    ssh.chmod(f"{rdir}/d", 0o755)
    assert stat.S_IMODE((ldir / "d").stat().st_mode) == 0o755
    assert ssh.user_id() == os.getuid()
    with pytest.raises(FileNotFoundError):
        ssh.stat_path(f"{rdir}/none")


def test_the_user_id_is_asked_once_even_by_threads_at_once(ssh, monkeypatch):
    """Connecting asks it beside the Python check while the trust checks want it too: the
    second caller waits for the first one's answer instead of running `id -u` again."""
    from hpcexec.transport.sshcommands import Commands

    ran, real = [], Commands.execute

    def slow(self, command, **kw):
        ran.append(command)
        time.sleep(0.3)  # long enough for the other thread to ask meanwhile
        return real(self, command, **kw)

    monkeypatch.setattr(Commands, "execute", slow)
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(lambda _: ssh.user_id(), range(2))) == [os.getuid()] * 2
    assert ran == ["id -u"]


def test_stat_paths_looks_at_many_paths_in_one_exchange(ssh, remote, monkeypatch):
    """What the trust checks of a connection need, together: each path as stat_path sees it
    (a link at its target), None for a missing one or a dangling link."""
    rdir, ldir = remote
    ssh.make_dir(f"{rdir}/d")
    (ldir / "f").write_bytes(b"")
    (ldir / "f").chmod(0o640)
    (ldir / "link").symlink_to(ldir / "d")
    (ldir / "dangling").symlink_to(ldir / "nowhere")
    paths = [f"{rdir}/{n}" for n in ("d", "f", "none")] + [f"{rdir}/d"]
    ssh.expand_path("~")  # the home directory, asked once for every later ~
    trips = Exchanges(monkeypatch)
    seen = ssh.stat_paths(paths)
    assert trips.count == 1
    assert seen == {
        f"{rdir}/d": PathStat(os.getuid(), stat.S_IFDIR | 0o700, False, str(ldir / "d")),
        f"{rdir}/f": PathStat(os.getuid(), stat.S_IFREG | 0o640, False, str(ldir / "f")),
        f"{rdir}/none": None,
    }
    assert ssh.stat_paths([f"{rdir}/dangling"]) == {f"{rdir}/dangling": None}
    st = ssh.stat_paths([f"{rdir}/link"])[f"{rdir}/link"]  # at the link's target, named
    assert st == PathStat(os.getuid(), stat.S_IFDIR | 0o700, True, str(ldir / "d"))


def test_file_methods_with_tilde_spaces_and_quotes(ssh, remote):
    rdir, ldir = remote
    assert ssh.expand_path(rdir) == str(ldir)
    assert ssh.expand_path("~") == str(REMOTE_HOME)
    assert not ssh.exists(rdir) and ssh.list_dir(rdir) == []
    ssh.make_dir(f"{rdir}/sub 1/sub 2")
    assert (ldir / "sub 1" / "sub 2").is_dir()
    assert stat.S_IMODE((ldir / "sub 1").stat().st_mode) == 0o700
    ssh.make_dir(rdir)  # exists already: fine

    name = f'{rdir}/it\'s "a" file'
    ssh.write_bytes(name, b"first")
    ssh.write_bytes(name, b"second version")  # atomic: replaces it
    assert (ldir / 'it\'s "a" file').read_bytes() == b"second version"
    assert sorted(ssh.list_dir(rdir)) == ['it\'s "a" file', "sub 1"]  # no temporary left over
    assert ssh.read_bytes(name) == b"second version"
    assert ssh.read_tail(name, 7) == "version"
    assert ssh.read_tail(name, 1000) == "second version"
    assert ssh.exists(name)

    ssh.write_bytes(f"{rdir}/plain", b"not atomic", atomic=False)
    assert (ldir / "plain").read_bytes() == b"not atomic"
    blob = random.Random(4).randbytes(3 * 1024 * 1024 + 17)  # pipelined both ways
    ssh.write_bytes(f"{rdir}/blob", blob)
    assert (ldir / "blob").read_bytes() == blob
    assert ssh.read_bytes(f"{rdir}/blob") == blob

    assert ssh.create_exclusive(f"{rdir}/claim", b"mine") is True
    assert ssh.create_exclusive(f"{rdir}/claim", b"theirs") is False
    assert (ldir / "claim").read_bytes() == b"mine"

    ssh.rename(name, f"{rdir}/renamed 'x'")
    assert not (ldir / 'it\'s "a" file').exists()
    assert (ldir / "renamed 'x'").read_bytes() == b"second version"
    ssh.rename(f"{rdir}/plain", f"{rdir}/blob")  # POSIX rename replaces the target
    assert (ldir / "blob").read_bytes() == b"not atomic"

    ssh.symlink(f"{rdir}/renamed 'x'", f'{rdir}/link "l"')
    assert os.readlink(ldir / 'link "l"') == str(ldir / "renamed 'x'")
    assert ssh.read_bytes(f'{rdir}/link "l"') == b"second version"

    r = ssh.run(["cat", str(ldir / "renamed 'x'")])  # and the same path through a command
    assert r.stdout == "second version"

    ssh.remove_tree(f"{rdir}/sub 1")
    assert not (ldir / "sub 1").exists()
    ssh.remove_tree(f"{rdir}/sub 1")  # gone already: nothing happens
    ssh.remove_tree(rdir)
    assert not ldir.exists()


def test_read_files_reads_many_files_of_every_size_together(ssh, remote, monkeypatch):
    rdir, ldir = remote
    ssh.make_dir(rdir)
    sizes = [0, 1, 32767, 32768, 32769, 100_000, 3_000_000] + [10] * 40
    want = {f"{rdir}/f{i}": random.randbytes(n) for i, n in enumerate(sizes)}
    for path, data in want.items():
        (ldir / path.rsplit("/", 1)[1]).write_bytes(data)
    want[f"{rdir}/missing"] = None
    in_flight = []
    real = paramiko.SFTPClient._async_request

    def sending(self, fileobj, t, *args):
        in_flight.append(len(self._expecting))
        return real(self, fileobj, t, *args)

    monkeypatch.setattr(paramiko.SFTPClient, "_async_request", sending)
    assert ssh.read_files(list(want)) == want
    # Every file's open went out before the first answer was read: one round trip, not 48.
    assert max(in_flight) >= len(want) - 1
    assert ssh.read_bytes(f"{rdir}/f2") == want[f"{rdir}/f2"]
    with pytest.raises(FileNotFoundError):
        ssh.read_bytes(f"{rdir}/missing")
    with pytest.raises(TransportError, match="read 2 files"):
        ssh.read_files([f"{rdir}/f1", rdir])  # a directory is an error, not a missing file
    assert ssh.read_files([f"{rdir}/f1"]) == {f"{rdir}/f1": want[f"{rdir}/f1"]}  # still usable


def test_a_thread_waiting_on_a_file_does_not_hold_back_another_threads_files(ssh, remote):
    """Each thread that uses files at the same time has an SFTP session of its own (the
    monitor reads results while the submitting thread stages): a read that waits on the
    server holds back nobody else's, and the sessions are kept for the next operations."""
    rdir, ldir = remote
    ssh.make_dir(rdir)
    os.mkfifo(ldir / "fifo")  # opening it to write waits for a reader, on the server
    (ldir / "file").write_bytes(b"plain")
    opened = []
    real = paramiko.SSHClient.open_sftp

    def counting(self):
        opened.append(1)
        return real(self)

    with pytest.MonkeyPatch.context() as mp, ThreadPoolExecutor(2) as pool:
        mp.setattr(paramiko.SSHClient, "open_sftp", counting)
        waiting = pool.submit(ssh.write_bytes, f"{rdir}/fifo", b"through the fifo", atomic=False)
        try:
            other = pool.submit(ssh.read_files, [f"{rdir}/file", f"{rdir}/nothing"])
            assert other.result(timeout=60) == {f"{rdir}/file": b"plain", f"{rdir}/nothing": None}
            assert not waiting.done()
        finally:  # a reader lets the write end, whatever happened
            reader = os.open(ldir / "fifo", os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert waiting.result(timeout=60) is None
        finally:
            os.close(reader)
        for _ in range(5):
            assert ssh.exists(f"{rdir}/file")
        assert len(opened) == 1  # a second session beside make_dir's; both kept
    assert ssh.connections_opened == 1


def test_at_most_three_sftp_sessions_a_fourth_thread_waits_for_one(ssh, remote):
    """Shells and SFTP sessions count against sshd's MaxSessions (10 by default): a thread
    that finds all three sessions in use waits for one, it does not open a fourth."""
    from hpcexec.transport.sshconnect import SFTP_SESSIONS

    rdir, ldir = remote
    ssh.make_dir(rdir)  # the first session, idle again
    (ldir / "file").write_bytes(b"plain")
    fifos = [ldir / f"fifo{i}" for i in range(SFTP_SESSIONS)]
    for fifo in fifos:
        os.mkfifo(fifo)
    opened = []
    real = paramiko.SSHClient.open_sftp

    def counting(self):
        opened.append(1)
        return real(self)

    with pytest.MonkeyPatch.context() as mp, ThreadPoolExecutor(SFTP_SESSIONS + 1) as pool:
        mp.setattr(paramiko.SSHClient, "open_sftp", counting)
        writes = [
            pool.submit(ssh.write_bytes, f"{rdir}/{f.name}", b"x", atomic=False) for f in fifos
        ]
        try:
            deadline = time.monotonic() + 60
            while len(opened) < SFTP_SESSIONS - 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            fourth = pool.submit(ssh.read_bytes, f"{rdir}/file")
            time.sleep(0.5)
            assert not fourth.done() and len(opened) == SFTP_SESSIONS - 1
        finally:  # a reader on each lets every write end, whatever happened
            readers = [os.open(fifo, os.O_RDONLY | os.O_NONBLOCK) for fifo in fifos]
        try:
            assert [w.result(timeout=60) for w in writes] == [None] * SFTP_SESSIONS
        finally:
            for r in readers:
                os.close(r)
        assert fourth.result(timeout=60) == b"plain"
        assert len(opened) == SFTP_SESSIONS - 1  # the sessions were reused


def test_stage_writes_a_whole_submission_in_a_few_round_trips(ssh, remote, monkeypatch):
    """A submission's directories, files and links in three round trips, however many:
    not the ten or so per job that one request at a time costs."""
    rdir, ldir = remote
    ssh.make_dir(rdir)
    (ldir / "there").mkdir()  # a directory that exists already is fine
    dirs = [f"{rdir}/there"] + [f"{rdir}/job {i}" for i in range(40)] + [f"{rdir}/job 0/sub"]
    files = {f"{rdir}/job {i}/payload": random.randbytes(100 + i) for i in range(40)}
    files[f"{rdir}/job 0/sub/big"] = random.randbytes(100_000)  # more than one write
    links = {f"{rdir}/there/{i}.out": f"{rdir}/job {i}/payload" for i in range(40)}
    trips = Exchanges(monkeypatch)
    ssh.stage(dirs, files, links)
    # Two levels of directories, then the opens, then the writes, closes and links; one
    # more to look at the directory that exists.
    assert trips.count <= 5
    for path, data in files.items():
        assert (ldir / path[len(rdir) + 1 :]).read_bytes() == data
    assert (ldir / "there" / "7.out").read_bytes() == files[f"{rdir}/job 7/payload"]
    assert stat.S_IMODE((ldir / "job 3").stat().st_mode) == 0o700
    with pytest.raises(TransportError, match="write 0 directories, 1 files and 1 links"):
        ssh.stage([], {f"{rdir}/job 1/payload": b"again"}, {f"{rdir}/there/1.out": "x"})
    assert (ldir / "job 1" / "payload").read_bytes() == b"again"  # the file went; the link not
    with pytest.raises(OSError):
        ssh.stage([], {f"{rdir}/no such dir/f": b""})


def test_list_dirs_lists_many_directories_together(ssh, remote, monkeypatch):
    """Many directories in three round trips (the opens, the reads, the reads that find
    each end), not four each; one with more names than a server answers in one read is
    read on to its end; a missing one is empty."""
    rdir, ldir = remote
    ssh.make_dir(rdir)
    want = {}
    for i in range(30):
        (ldir / f"d {i}").mkdir()
        want[f"{rdir}/d {i}"] = sorted(f"{k}@x 'y'" for k in range(i))
        for name in want[f"{rdir}/d {i}"]:
            (ldir / f"d {i}" / name).write_text("")
    (ldir / "big").mkdir()
    want[f"{rdir}/big"] = sorted(str(k) for k in range(450))  # OpenSSH: 100 names a read
    for name in want[f"{rdir}/big"]:
        (ldir / "big" / name).write_text("")
    want[f"{rdir}/missing"] = []
    trips = Exchanges(monkeypatch)
    got = ssh.list_dirs(list(want))
    assert {path: sorted(names) for path, names in got.items()} == want
    assert trips.count == 7  # the opens; five reads for the big one's 452 entries; its end
    trips.count = 0
    assert {p: sorted(n) for p, n in ssh.list_dirs([f"{rdir}/d 3", f"{rdir}/d 5"]).items()} == {
        f"{rdir}/d 3": want[f"{rdir}/d 3"],
        f"{rdir}/d 5": want[f"{rdir}/d 5"],
    }
    assert trips.count == 3
    (ldir / "file").write_text("")  # what OpenSSH calls no such directory, as list_dir does
    assert ssh.list_dirs([f"{rdir}/file"]) == {f"{rdir}/file": ssh.list_dir(f"{rdir}/file")}
    assert ssh.list_dirs([]) == {}


def test_renames_go_together_and_say_which_failed(ssh, remote, monkeypatch):
    rdir, ldir = remote
    ssh.make_dir(rdir)
    for i in range(20):
        (ldir / f"new {i}").mkdir()
    (ldir / "taken").mkdir()
    (ldir / "taken" / "f").write_text("")
    (ldir / "new 0" / "f").write_text("")
    trips = Exchanges(monkeypatch)
    pairs = [(f"{rdir}/new {i}", f"{rdir}/job {i}") for i in range(1, 20)]
    errors = ssh.renames([*pairs, (f"{rdir}/new 0", f"{rdir}/taken"), (f"{rdir}/nothing", "x")])
    assert trips.count == 1
    assert errors[:19] == [None] * 19 and all(isinstance(e, OSError) for e in errors[19:])
    assert sorted(p.name for p in ldir.iterdir()) == sorted(
        ["new 0", "taken"] + [f"job {i}" for i in range(1, 20)]
    )
    assert ssh.renames([]) == []


def test_the_delayed_link_counts_round_trips(sshd, tmp_path):
    """What benchmarks/ssh_overhead.py measures with: a relay adding 20 ms each way."""
    with DelayedLink(PORT, 0.02) as link:
        known = known_hosts_for(link.port, tmp_path / "relay_known_hosts")
        t = SSHTransport(f"root@127.0.0.1:{link.port}", ssh_key=KEY, known_hosts=known)
        try:
            assert t.run(["echo", "far"]).stdout == "far\n"
            before, start = link.round_trips, time.monotonic()
            for _ in range(3):
                t.exists("/")
            assert time.monotonic() - start >= 3 * 0.04  # each waits out the delay both ways
            assert 3 <= link.round_trips - before <= 6  # SSH's own messages may add some
        finally:
            t.close()


def test_missing_files(ssh, remote):
    rdir, _ldir = remote
    with pytest.raises(FileNotFoundError, match="no-such-file"):
        ssh.read_bytes(f"{rdir}/no-such-file")
    assert ssh.read_tail(f"{rdir}/no-such-file", 10) == ""
    assert ssh.list_dir(f"{rdir}/no-such-dir") == []
    assert not ssh.exists(f"{rdir}/no-such-file")
    with pytest.raises(FileNotFoundError):
        ssh.write_bytes(f"{rdir}/no-such-dir/f", b"x")
    with pytest.raises(FileNotFoundError):
        ssh.create_exclusive(f"{rdir}/no-such-dir/f")
    with pytest.raises(TransportError, match="only ~ and ~/"):
        ssh.read_bytes("~someone/file")
    with pytest.raises(TransportError, match="refusing"):
        ssh.remove_tree("~")


def test_create_exclusive_lets_exactly_one_client_win(sshd, remote):
    rdir, ldir = remote
    clients = [SSHTransport(DEST, ssh_key=KEY, known_hosts=KNOWN) for _ in range(2)]
    clients[0].make_dir(rdir)
    for c in clients:
        c.exists(rdir)  # connected before the race
    barrier = threading.Barrier(8)

    def race(i: int) -> bool:
        barrier.wait()
        return clients[i % 2].create_exclusive(f"{rdir}/claim", str(i).encode())

    with ThreadPoolExecutor(8) as pool:
        wins = [i for i, won in enumerate(pool.map(race, range(8))) if won]
    for c in clients:
        c.close()
    assert len(wins) == 1
    assert (ldir / "claim").read_bytes() == str(wins[0]).encode()


def test_process_stat(ssh):
    assert ssh.process_stat(2**22 + 12345) is None
    assert ssh.process_stat(os.getpid()).startswith(f"{os.getpid()} (python")


def test_spawn_detached_outlives_the_call_and_takes_signals(ssh, remote):
    rdir, ldir = remote
    ssh.make_dir(rdir)
    script = 'pwd; printf "%s\\n" "$HPC_X"; echo to-err >&2; exec sleep 60'
    t0 = time.monotonic()
    pid = ssh.spawn_detached(
        ["sh", "-c", script],
        cwd=rdir,
        stdout=f"{rdir}/out 'o'",
        stderr=f'{rdir}/err "e"',
        env={"HPC_X": "a b'c\"d $HOME"},
    )
    assert time.monotonic() - t0 < 5
    assert os.getsid(pid) == pid and os.getpgid(pid) == pid  # its own session and group
    fields = ssh.process_stat(pid).rsplit(") ", 1)[1].split()
    assert int(fields[2]) == pid and int(fields[3]) == pid  # pgrp, session
    deadline = time.monotonic() + 10
    while "a b" not in ssh.read_tail(f"{rdir}/out 'o'", 1000):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert (ldir / "out 'o'").read_text() == f"{ldir}\na b'c\"d $HOME\n"
    assert (ldir / 'err "e"').read_text() == "to-err\n"

    assert ssh.signal_group(pid, signal.SIGTERM) is True
    deadline = time.monotonic() + 10
    while not gone(pid):
        assert time.monotonic() < deadline, "SIGTERM to the group did not end it"
        time.sleep(0.05)
    assert ssh.signal_group(2**22 + 12345, signal.SIGTERM) is False


def test_spawn_detached_one_file_for_both_streams_and_missing_program(ssh, remote):
    rdir, ldir = remote
    ssh.make_dir(rdir)
    pid = ssh.spawn_detached(
        ["sh", "-c", "echo o; echo e >&2"], cwd=rdir, stdout=f"{rdir}/both", stderr=f"{rdir}/both"
    )
    deadline = time.monotonic() + 10
    while sorted((ldir / "both").read_text().split()) != ["e", "o"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert pid > 0
    (ldir / "job 'j'.sh").write_text("#!/bin/sh\necho relative > rel\n")
    (ldir / "job 'j'.sh").chmod(0o755)
    ssh.spawn_detached(["./job 'j'.sh"], cwd=rdir, stdout="/dev/null", stderr="/dev/null")
    while not (ldir / "rel").exists() or (ldir / "rel").read_text() != "relative\n":
        assert time.monotonic() < deadline  # a program relative to cwd is found there
        time.sleep(0.05)
    with pytest.raises(TransportError, match="command not found: no-such-program"):
        ssh.spawn_detached(["no-such-program"], cwd=rdir, stdout=f"{rdir}/o", stderr=f"{rdir}/e")
    with pytest.raises(TransportError, match="could not start sh in"):
        ssh.spawn_detached(["sh"], cwd=f"{rdir}/absent", stdout="/dev/null", stderr="/dev/null")


# -- one connection ---------------------------------------------------------------------


def test_one_tcp_connection_for_many_calls(ssh, remote):
    rdir, _ = remote
    before = established(PORT)
    ssh.make_dir(rdir)

    def work(i: int) -> None:
        for j in range(10):
            ssh.write_bytes(f"{rdir}/f{i}-{j}", b"x")
            assert ssh.read_bytes(f"{rdir}/f{i}-{j}") == b"x"
            assert ssh.process_stat(1)
            if j % 4 == 0:
                assert ssh.run(["echo", str(j)]).stdout == f"{j}\n"

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))  # re-raises a thread's failure here
    assert len(ssh.list_dir(rdir)) == 40
    assert ssh.connections_opened == 1
    assert established(PORT) - before == 1
    ssh.close()
    assert established(PORT) - before == 0


# -- host keys --------------------------------------------------------------------------


def test_unknown_host_key_is_refused_with_the_way_to_add_it(sshd, tmp_path):
    only_first = tmp_path / "known_hosts"
    only_first.write_text(known_hosts_lines(PORT))
    with SSHTransport(DEST, ssh_key=KEY, known_hosts=only_first) as ok:  # the file works
        assert ok.run(["true"]).ok
    t = SSHTransport(f"root@127.0.0.1:{PORT2}", ssh_key=KEY, known_hosts=only_first)
    with pytest.raises(HostKeyError) as e:
        t.run(["true"])
    msg = str(e.value)
    assert f"ssh-keyscan -p {PORT2} 127.0.0.1 >> " in msg
    assert f"[127.0.0.1]:{PORT2}" in msg and "is not in" in msg and "trust_on_first_use" in msg
    assert fingerprint(PORT2) in msg
    assert only_first.read_text() == known_hosts_lines(PORT)  # nothing added
    assert t.connections_opened == 0


def test_changed_host_key_is_refused(sshd):
    t = SSHTransport(f"root@127.0.0.1:{PORT2}", ssh_key=KEY, known_hosts=MISMATCH)
    with pytest.raises(HostKeyError) as e:
        t.exists("/")
    msg = str(e.value)
    assert "CHANGED" in msg and str(MISMATCH) in msg
    assert f"ssh-keygen -R '[127.0.0.1]:{PORT2}' -f {MISMATCH}" in msg
    assert f"ssh-keyscan -p {PORT2} 127.0.0.1 >> {MISMATCH}" in msg


def test_known_hosts_in_home_is_read(sshd, home):
    (home / ".ssh").mkdir()
    (home / ".ssh" / "known_hosts").write_text(known_hosts_lines(PORT2))
    with SSHTransport(f"root@127.0.0.1:{PORT2}", ssh_key=KEY) as t:
        assert t.run(["true"]).ok
    with pytest.raises(HostKeyError, match=r">> ~/.ssh/known_hosts"):
        SSHTransport(DEST, ssh_key=KEY).run(["true"])


def test_trust_on_first_use_saves_an_unknown_key(sshd, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text(known_hosts_lines(PORT))
    with SSHTransport(
        f"root@127.0.0.1:{PORT2}", ssh_key=KEY, known_hosts=kh, trust_on_first_use=True
    ) as t:
        assert t.run(["true"]).ok
    assert kh.read_text() == known_hosts_lines(PORT) + f"[127.0.0.1]:{PORT2} {host_key(PORT2)}\n"
    with SSHTransport(f"root@127.0.0.1:{PORT2}", ssh_key=KEY, known_hosts=kh) as again:
        assert again.run(["true"]).ok  # known now, without trust_on_first_use


def test_trust_on_first_use_saves_to_home_known_hosts(sshd, home):
    with SSHTransport(DEST, ssh_key=KEY, trust_on_first_use=True) as t:
        assert t.run(["true"]).ok
    saved = home / ".ssh" / "known_hosts"
    assert saved.read_text() == f"[127.0.0.1]:{PORT} {host_key(PORT)}\n"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600


def test_trust_on_first_use_still_refuses_a_changed_key(sshd, tmp_path):
    kh = tmp_path / "known_hosts"
    shutil.copy(MISMATCH, kh)
    t = SSHTransport(
        f"root@127.0.0.1:{PORT2}", ssh_key=KEY, known_hosts=kh, trust_on_first_use=True
    )
    with pytest.raises(HostKeyError, match="CHANGED"):
        t.run(["true"])
    assert kh.read_text() == MISMATCH.read_text()


# -- ssh config, keys, jumps -------------------------------------------------------------


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_ssh_config_alias(sshd, tmp_path):
    cfg = write_config(
        tmp_path / "config",
        f"""
Host testcluster
    HostName 127.0.0.1
    Port {PORT}
    User root
    IdentityFile {KEY}
    IdentitiesOnly yes
    ServerAliveInterval 7
""",
    )
    with SSHTransport("testcluster", ssh_config=cfg, known_hosts=KNOWN) as t:
        assert t.host == "testcluster"
        assert (t.endpoint.hostname, t.endpoint.port, t.endpoint.user) == (
            "127.0.0.1",
            PORT,
            "root",
        )
        assert t.keepalive == 7
        assert t.run(["id", "-un"]).stdout == "root\n"
        assert t._conn.transport.sock.getpeername() == ("127.0.0.1", PORT)
    # Without the config the alias leads nowhere.
    with pytest.raises(TransportError, match=r"cannot connect to .*testcluster"):
        SSHTransport(
            "testcluster",
            ssh_config=write_config(tmp_path / "empty", ""),
            known_hosts=KNOWN,
            connect_timeout=5,
        ).run(["true"])
    with pytest.raises(TransportError, match="does not exist"):
        SSHTransport("testcluster", ssh_config=tmp_path / "absent")


def test_no_usable_key_says_how_to_give_one(sshd):
    with pytest.raises(TransportError, match=r"SSH login to .* failed.*ssh_key=.*ssh-add"):
        SSHTransport(DEST, known_hosts=KNOWN).run(["true"])


def test_default_key_in_home_is_used(sshd, home):
    (home / ".ssh").mkdir(mode=0o700)
    shutil.copy(KEY, home / ".ssh" / "id_ed25519")
    with SSHTransport(DEST, known_hosts=KNOWN) as t:
        assert t.run(["true"]).ok


def test_agent_key_is_used(sshd, tmp_path, monkeypatch):
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.02)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", str(KEY)], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        with SSHTransport(DEST, known_hosts=KNOWN) as t:
            assert t.run(["true"]).ok
    finally:
        agent.terminate()
        agent.wait(10)


def test_passphrase_protected_key_says_to_use_the_agent(sshd, tmp_path):
    key = tmp_path / "locked key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "sekrit-phrase", "-f", str(key)], check=True
    )
    with pytest.raises(TransportError) as e:
        SSHTransport(DEST, ssh_key=key, known_hosts=KNOWN).run(["true"])
    assert "passphrase" in str(e.value) and "ssh-add" in str(e.value)
    assert "sekrit-phrase" not in str(e.value)
    with pytest.raises(TransportError, match="does not exist"):
        SSHTransport(DEST, ssh_key=tmp_path / "absent")


def test_proxyjump_runs_through_the_jump_host(sshd, tmp_path):
    cfg = write_config(
        tmp_path / "config",
        f"""
Host jump
    HostName 127.0.0.1
    Port {PORT}
    User root
    IdentityFile {KEY}
Host behind
    HostName 127.0.0.1
    Port {PORT2}
    User root
    IdentityFile {KEY}
    ProxyJump jump
""",
    )
    before = established(PORT), established(PORT2)
    with SSHTransport("behind", ssh_config=cfg, known_hosts=KNOWN) as t:
        assert [ep.alias for ep in t.endpoint.jumps] == ["jump"]
        assert t.run(["echo", "through"]).stdout == "through\n"
        assert t.read_bytes(f"/proc/{os.getpid()}/comm")
        # One TCP connection, to the jump host; the target is reached through it.
        assert (established(PORT) - before[0], established(PORT2) - before[1]) == (1, 0)
        assert t.connections_opened == 1
    # The jump host's key is checked too.
    only_target = tmp_path / "kh"
    only_target.write_text(known_hosts_lines(PORT2))
    with pytest.raises(HostKeyError, match=rf"\[127.0.0.1\]:{PORT}"):
        SSHTransport("behind", ssh_config=cfg, known_hosts=only_target).run(["true"])


def test_proxycommand(sshd, tmp_path):
    jump = (
        f"ssh -F /dev/null -i {KEY} -o IdentitiesOnly=yes -o BatchMode=yes "
        f"-o UserKnownHostsFile={KNOWN} -p {PORT} root@127.0.0.1 -W %h:%p"
    )
    cfg = write_config(
        tmp_path / "config",
        f"""
Host viacmd
    HostName 127.0.0.1
    Port {PORT2}
    User root
    IdentityFile {KEY}
    ProxyCommand {jump}
""",
    )
    before = established(PORT2)
    with SSHTransport("viacmd", ssh_config=cfg, known_hosts=KNOWN) as t:
        assert t.run(["echo", "piped"]).stdout == "piped\n"
        assert established(PORT2) == before  # the ssh child process holds that connection


def test_unreachable_port_and_bad_destination(sshd):
    with pytest.raises(TransportError, match=r"cannot connect to root@127.0.0.1:1 .*port 1"):
        SSHTransport("root@127.0.0.1:1", ssh_key=KEY, known_hosts=KNOWN).run(["true"])
    with pytest.raises(TransportError, match="cannot read SSH destination"):
        SSHTransport("root@host:port:oops")


# -- dropped connections ----------------------------------------------------------------


def test_reconnects_after_sshd_restart(ssh, remote):
    rdir, _ = remote
    ssh.make_dir(rdir)
    ssh.write_bytes(f"{rdir}/f", b"kept")
    assert ssh.connections_opened == 1
    restart_sshd()
    drop_connection(ssh)  # a restarted sshd leaves old sessions running: end ours
    assert ssh.read_bytes(f"{rdir}/f") == b"kept"  # no error
    assert ssh.run(["echo", "again"]).stdout == "again\n"
    assert ssh.connections_opened == 2
    assert established(PORT) >= 1


def kill_when(path: Path, t: SSHTransport) -> threading.Thread:
    def watch() -> None:
        deadline = time.monotonic() + 20
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        drop_connection(t, mid_command=True)  # the command has passed its rc files

    th = threading.Thread(target=watch)
    th.start()
    return th


def test_command_is_not_run_twice_when_the_connection_drops(ssh, remote):
    rdir, ldir = remote
    ssh.make_dir(rdir)
    marker = ldir / "ran"
    script = f"echo ran >> {shlex.quote(str(marker))}; sleep 2; echo finished"
    th = kill_when(marker, ssh)
    with pytest.raises(TransportError, match="may or may not have run there"):
        ssh.run(["sh", "-c", script])
    th.join()
    assert marker.read_text() == "ran\n"
    assert ssh.exists(rdir)  # and the transport goes on, on a new connection
    assert ssh.connections_opened == 2


def test_idempotent_command_runs_again_after_a_drop(ssh, remote):
    rdir, ldir = remote
    ssh.make_dir(rdir)
    marker = ldir / "ran"
    script = f"echo ran >> {shlex.quote(str(marker))}; sleep 2; echo finished"
    th = kill_when(marker, ssh)
    r = ssh.run(["sh", "-c", script], idempotent=True)
    th.join()
    assert r.stdout == "finished\n"
    assert marker.read_text() == "ran\nran\n"
    assert ssh.connections_opened == 2


def test_file_read_is_retried_but_rename_is_not_after_a_drop(ssh, remote, monkeypatch):
    rdir, ldir = remote
    ssh.make_dir(rdir)
    ssh.write_bytes(f"{rdir}/a", b"A")
    calls = {"stat": 0, "posix_rename": 0}

    def dropping(name):
        original = getattr(paramiko.SFTPClient, name)

        def wrapper(self, *args):
            calls[name] += 1
            if calls[name] == 1:
                drop_connection(ssh)  # the request goes out on a dead connection
            return original(self, *args)

        monkeypatch.setattr(paramiko.SFTPClient, name, wrapper)

    dropping("stat")
    assert ssh.exists(f"{rdir}/a") is True
    assert calls["stat"] == 2 and ssh.connections_opened == 2

    dropping("posix_rename")
    with pytest.raises(TransportError, match="may or may not have happened"):
        ssh.rename(f"{rdir}/a", f"{rdir}/b")
    assert calls["posix_rename"] == 1  # not sent again
    assert (ldir / "a").exists() and not (ldir / "b").exists()
    assert ssh.read_bytes(f"{rdir}/a") == b"A"
    assert ssh.connections_opened == 3


def test_connection_options(sshd, tmp_path):
    t = SSHTransport(DEST, ssh_key=KEY, known_hosts=KNOWN, connect_timeout=3, keepalive=11)
    with t:
        t.run(["true"])
        assert t._conn.transport.packetizer._Packetizer__keepalive_interval == 11
    assert t.connect_timeout == 3.0
    assert re.search(rf"SSHTransport\('root@127.0.0.1:{PORT}'", repr(t))
