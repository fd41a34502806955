"""The loopback sshd that tests/clusters/sshd.sh starts, as tests see it: where its keys are,
and how to count, drop and restart connections to it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import paramiko
from livecluster import CLUSTERS

SSHD_DIR = Path(os.environ.get("HPCEXEC_SSHD_DIR", "/var/lib/hpcexec-test-sshd"))
KEY = SSHD_DIR / "client_key"
KNOWN = SSHD_DIR / "known_hosts"
MISMATCH = SSHD_DIR / "known_hosts_mismatch"
DEFAULT_PORTS = (2222, 2223)


def ports(sshd_dir: Path = SSHD_DIR) -> tuple[int, int]:
    """The two servers' ports: $HPCEXEC_SSHD_PORT and $HPCEXEC_SSHD_PORT2 where set, else
    those ``sshd.sh start`` wrote to ``<sshd_dir>/ports`` (it picks free ones when 2222 or
    2223 is taken), else 2222 and 2223."""
    try:
        saved = tuple(int(p) for p in (sshd_dir / "ports").read_text().split())
    except (OSError, ValueError):
        saved = ()
    first, second = saved if len(saved) == 2 else DEFAULT_PORTS
    return (
        int(os.environ.get("HPCEXEC_SSHD_PORT") or first),
        int(os.environ.get("HPCEXEC_SSHD_PORT2") or second),
    )


PORT, PORT2 = ports()
DEST = f"root@127.0.0.1:{PORT}"


def established(port: int) -> int:
    """ESTABLISHED TCP connections from this process to 127.0.0.1:port (from /proc/net)."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            mine.add(link[8:-1])
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "01" and int(f[2].rsplit(":", 1)[1], 16) == port and f[9] in mine:
                n += 1
    return n


def server_side_pids(client_port: int) -> list[int]:
    """The sshd processes serving the connection that comes from local port client_port."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if (
            f[3] == "01"
            and int(f[1].rsplit(":", 1)[1], 16) == PORT
            and int(f[2].rsplit(":", 1)[1], 16) == client_port
        ):
            inodes.add(f"socket:[{f[9]}]")
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                pids.append(int(pid))
        except OSError:
            continue
    return pids


def drop_connection(t, *, mid_command: bool = False) -> None:
    """End the server side of t's connection (as when sshd's session dies) and wait until
    the client has seen it. Unless ``mid_command``, wait for the commands it runs to end
    first."""
    conn = t._conn
    assert conn is not None and conn.alive()
    pids = server_side_pids(conn.transport.sock.getsockname()[1])
    assert pids, "no sshd process found for the connection"
    # Not while a command's shell starts: a login shell killed in its rc files can leave
    # their locks behind (pyenv's rehash lock, on these machines) for every later shell.
    deadline = time.monotonic() + 10
    while not mid_command and commands_under(pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    for pid in pids:
        assert Path(f"/proc/{pid}/comm").read_text().strip().startswith("sshd")
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while conn.alive():
        assert time.monotonic() < deadline, "the client did not notice the dropped connection"
        time.sleep(0.02)


def descendants(pids: list[int]) -> set[int]:
    """The processes below ``pids``."""
    parent = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent[int(entry)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    found: set[int] = set()
    frontier = set(pids)
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - found
        found |= frontier
    return found


def commands_under(pids: list[int]) -> set[int]:
    """The processes below ``pids`` that run something: not sshd's own, and not a kept shell
    (the transport's ``/bin/sh``) waiting idle for its next command."""
    below = descendants(pids)
    out = set()
    for pid in below:
        try:
            if Path(f"/proc/{pid}/comm").read_text().startswith("sshd"):
                continue
            idle_shell = Path(
                f"/proc/{pid}/cmdline"
            ).read_bytes() == b"/bin/sh\0" and not descendants([pid])
        except OSError:
            continue
        if not idle_shell:
            out.add(pid)
    return out


def gone(pid: int) -> bool:
    """No such process, or only its zombie (this machine's init may not reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith(("Z", "X"))
    except FileNotFoundError:
        return True


def restart_sshd() -> None:
    """Restart the test sshd on PORT (only that one) and end its open sessions."""
    pidfile = SSHD_DIR / f"sshd_{PORT}.pid"
    old = int(pidfile.read_text())
    assert Path(f"/proc/{old}/comm").read_text().strip() == "sshd"
    os.kill(old, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while not gone(old):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    subprocess.run(["bash", str(CLUSTERS / "sshd.sh"), "start"], check=True, capture_output=True)
    assert int(pidfile.read_text()) != old


def known_hosts_for(port: int, into: Path, known: Path = KNOWN) -> Path:
    """A known-hosts file that names the loopback sshd's keys for another port too (a relay
    in front of it, such as tests/delaylink.py)."""
    keys = [line.split(None, 1)[1] for line in known.read_text().splitlines() if " " in line]
    into.write_text("".join(f"[127.0.0.1]:{port} {k}\n" for k in keys))
    return into


class Exchanges:
    """Counts the client's round trips on SFTP: each run of requests sent, then answers read,
    is one (however many requests it had in flight)."""

    def __init__(self, monkeypatch) -> None:
        self.count, self._sending = 0, False
        send, read = paramiko.SFTPClient._async_request, paramiko.SFTPClient._read_response

        def sending(client, *args):
            self._sending = True
            return send(client, *args)

        def reading(client, *args):
            if self._sending:
                self.count, self._sending = self.count + 1, False
            return read(client, *args)

        monkeypatch.setattr(paramiko.SFTPClient, "_async_request", sending)
        monkeypatch.setattr(paramiko.SFTPClient, "_read_response", reading)
