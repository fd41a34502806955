"""Shell command lines on the remote host: through a kept shell (or an exec channel each),
run once more after a drop only where that is safe."""

from __future__ import annotations

import logging
import select
import threading
import time

import paramiko

from ..errors import TransportError
from .sshconnect import Connection
from .sshlink import Link
from .sshshell import RemoteShell, ShellEnded, ShellTimeout

log = logging.getLogger(__name__)

# Commands running at once on the connection: sshd's MaxSessions (default 10) counts them
# (their kept shells) and the SFTP sessions (sshconnect.SFTP_SESSIONS).
MAX_CONCURRENT_COMMANDS = 7
# How long a new shell's start-up files may take (a shared home on a loaded filesystem).
SHELL_START_TIMEOUT = 120.0


class _CommandTimeout(Exception):
    pass


class _Dropped(Exception):
    """The connection (or the shell on it) ended after a command was sent."""


class Commands:
    """Runs command lines on ``link``'s host, in kept shells unless ``persistent_shell`` is
    false (or the server keeps none, which sets it false)."""

    def __init__(self, link: Link, *, persistent_shell: bool = True) -> None:
        self.link = link
        self.host = link.login.host
        self.persistent_shell = persistent_shell
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT_COMMANDS)
        self._idle_shells: list[RemoteShell] = []
        self._shell_lock = threading.Lock()

    def execute(
        self,
        command: str,
        *,
        input: str | None = None,
        timeout: float | None = 60.0,
        idempotent: bool,
        label: str | None = None,
    ) -> tuple[int, str, str]:
        """Run a shell command line; (exit status, stdout, stderr). ``label`` names it in
        messages; ``idempotent`` allows running it again after a drop."""
        label = label or command
        log.debug("ssh %s: %s", self.host, label)
        with self._slots:
            for attempt in (1, 2):
                try:
                    status, out, err = self._run_once(command, input, timeout, label)
                    return status, out.decode(errors="replace"), err.decode(errors="replace")
                except (_CommandTimeout, ShellTimeout):
                    raise TransportError(
                        f"command timed out after {timeout} s on {self.host}: {label} (the "
                        "remote process may still be running)"
                    ) from None
                except _Dropped as e:
                    if not idempotent or attempt == 2:
                        raise TransportError(
                            f"{e} while running {label!r}; it may or may not have run there, "
                            "so it is not run again (check its effect before retrying)"
                        ) from e
                    log.warning("%s while running %r; running it again", e, label)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the idle shells."""
        with self._shell_lock:
            shells, self._idle_shells = self._idle_shells, []
        for shell in shells:
            shell.close()

    def _run_once(
        self, command: str, input: str | None, timeout: float | None, label: str
    ) -> tuple[int, bytes, bytes]:
        shell = self._take_shell()
        if shell is not None:
            try:
                result = shell.run(command, input, timeout)
            except (ShellEnded, paramiko.SSHException, OSError, EOFError) as e:
                if shell.owner.alive():
                    raise _Dropped(f"the remote shell on {self.host} ended ({e})") from e
                self.link.discard(shell.owner)
                raise _Dropped(f"the SSH connection to {self.host} dropped") from e
            with self._shell_lock:
                self._idle_shells.append(shell)
            return result
        conn, chan = self.link.open_channel()
        try:
            chan.exec_command(command)
            return _collect(conn, chan, input, timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            if conn.alive():
                raise TransportError(f"running {label!r} on {self.host} failed: {e}") from e
            self.link.discard(conn)
            raise _Dropped(f"the SSH connection to {self.host} dropped") from e
        finally:
            chan.close()

    def _take_shell(self) -> RemoteShell | None:
        """An idle shell on the live connection, or a new one; None when the server does not
        keep one (each command then opens its own session). Nothing of the caller's command
        has been sent yet, so a connection that drops here is simply opened again."""
        if not self.persistent_shell:
            return None
        with self._shell_lock:
            while self._idle_shells:
                shell = self._idle_shells.pop()
                if (
                    not shell.broken
                    and not shell.chan.closed
                    and shell.owner is self.link.current
                    and shell.owner.alive()
                ):
                    return shell
                shell.close()
        for attempt in (1, 2):
            conn, chan = self.link.open_channel()
            try:
                return RemoteShell.start(chan, conn, SHELL_START_TIMEOUT)
            except ShellTimeout:
                raise TransportError(
                    f"the login shell on {self.host} did not start within "
                    f"{SHELL_START_TIMEOUT:g} s: do its start-up files (~/.bashrc, ~/.profile) "
                    "wait for something?"
                ) from None
            except (ShellEnded, paramiko.SSHException, OSError, EOFError) as e:
                if conn.alive():
                    log.warning(
                        "%s does not keep a shell open (%s): each command opens a "
                        "session of its own",
                        self.host,
                        e,
                    )
                    self.persistent_shell = False
                    return None
                self.link.discard(conn)
                if attempt == 2:
                    raise TransportError(
                        f"cannot start a shell on {self.host}: the connection dropped ({e})"
                    ) from e
        raise AssertionError("unreachable")


def _collect(
    conn: Connection, chan: paramiko.Channel, input: str | None, timeout: float | None
) -> tuple[int, bytes, bytes]:
    """Feed ``input`` to an exec channel, then read its output until its exit status."""
    deadline = None if timeout is None else time.monotonic() + timeout

    def remaining() -> float:
        if deadline is None:
            return 1.0
        left = deadline - time.monotonic()
        if left <= 0:
            raise _CommandTimeout
        return min(left, 1.0)

    if input:
        chan.settimeout(None if deadline is None else max(deadline - time.monotonic(), 0.01))
        try:
            chan.sendall(input.encode())
        except TimeoutError:
            raise _CommandTimeout from None
    chan.shutdown_write()
    out: list[bytes] = []
    err: list[bytes] = []
    fd = chan.fileno()
    while True:
        while chan.recv_ready():
            out.append(chan.recv(65536))
        while chan.recv_stderr_ready():
            err.append(chan.recv_stderr(65536))
        if chan.closed or (chan.eof_received and chan.exit_status_ready()):
            break
        if chan.eof_received:
            chan.status_event.wait(remaining())
        else:
            select.select([fd], [], [], remaining())
    while chan.recv_ready():
        out.append(chan.recv(65536))
    while chan.recv_stderr_ready():
        err.append(chan.recv_stderr(65536))
    if chan.exit_status == -1 and not conn.alive():
        # Closed by the connection's end, not by the command's.
        raise EOFError("the connection closed before the command's exit status arrived")
    return chan.exit_status, b"".join(out), b"".join(err)
