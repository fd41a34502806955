"""tests/clusters/sshd.sh itself: a port held by another program never stops it. It moves to
free ports, writes them where tests/sshtest.py reads them, reuses running servers, and when a
port is forced by a variable that is taken, fails naming the variable.

Each test starts its own pair of servers in its own state directory (HPCEXEC_SSHD_DIR) and
stops only those; the shared servers of the other tests are left alone."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from livecluster import CLUSTERS
from sshtest import DEFAULT_PORTS, ports

from hpcexec.errors import HostKeyError
from hpcexec.transport.ssh import SSHTransport

pytestmark = pytest.mark.ssh

SCRIPT = CLUSTERS / "sshd.sh"


def sshd_sh(command: str, state: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), command],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HPCEXEC_SSHD_DIR": str(state), **env},
        timeout=300,
    )


def hold(port: int = 0) -> socket.socket | None:
    """A listening socket on 127.0.0.1:port (0: any free port); None if the port is taken."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    s.listen()
    return s


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A state directory of this test's own; what the script started there is stopped."""
    if os.geteuid() != 0:
        pytest.skip("sshd.sh runs as root (it starts sshd and authorises root's key)")
    for var in ("HPCEXEC_SSHD_PORT", "HPCEXEC_SSHD_PORT2"):  # ports() reads the state only
        monkeypatch.delenv(var, raising=False)
    d = tmp_path / "sshd"
    yield d
    stopped = sshd_sh("stop", d)
    assert stopped.returncode == 0, stopped.stderr


@pytest.fixture
def taken():
    """Sockets of "another program": on two ports of its own and, where free, on 2222 and
    2223 (elsewhere something else has them already, such as the shared test sshd)."""
    held = [hold(), hold()] + [hold(p) for p in DEFAULT_PORTS]
    yield [s.getsockname()[1] for s in held if s]
    for s in held:
        if s:
            s.close()


def logs_in(state: Path, port: int, known_hosts: Path) -> bool:
    with SSHTransport(
        f"root@127.0.0.1:{port}", ssh_key=state / "client_key", known_hosts=known_hosts
    ) as t:
        return t.run(["echo", "ok"]).stdout == "ok\n"


def test_ports_taken_by_another_program_are_left_for_free_ones(state, taken):
    state.mkdir(mode=0o700)
    # The ports a previous start used, taken since by another program.
    (state / "ports").write_text(f"{taken[0]} {taken[1]}\n")
    started = sshd_sh("start", state)
    assert started.returncode == 0, started.stderr
    first, second = ports(state)
    assert first != second and not {first, second} & {*taken, *DEFAULT_PORTS}
    assert "set HPCEXEC_SSHD_PORT to choose one" in started.stderr
    assert logs_in(state, first, state / "known_hosts")
    assert logs_in(state, second, state / "known_hosts")
    with pytest.raises(HostKeyError):  # the second server has a key of its own
        logs_in(state, second, state / "known_hosts_mismatch")

    again = sshd_sh("start", state)  # idempotent: the running servers are kept
    assert again.returncode == 0, again.stderr
    assert ports(state) == (first, second)
    assert again.stderr.count("already running") == 2

    status = sshd_sh("status", state)
    assert status.returncode == 0 and f"127.0.0.1:{first}: running" in status.stdout


def test_a_taken_port_set_by_its_variable_fails_naming_the_variable(state, taken):
    forced = sshd_sh("start", state, HPCEXEC_SSHD_PORT2=str(taken[0]))
    assert forced.returncode != 0
    assert f"port {taken[0]} (from HPCEXEC_SSHD_PORT2) is taken by another program" in forced.stderr
    assert "set HPCEXEC_SSHD_PORT2 to a free port" in forced.stderr


def test_ports_set_by_the_variables_are_used(state, taken):
    free = [hold(), hold()]
    wanted = [s.getsockname()[1] for s in free]
    for s in free:
        s.close()
    env = {"HPCEXEC_SSHD_PORT": str(wanted[0]), "HPCEXEC_SSHD_PORT2": str(wanted[1])}
    started = sshd_sh("start", state, **env)
    assert started.returncode == 0, started.stderr
    assert ports(state) == tuple(wanted)
    assert logs_in(state, wanted[1], state / "known_hosts")
