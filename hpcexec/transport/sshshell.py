"""A POSIX shell kept open on one SSH channel.

Each ``exec`` channel starts the remote user's login shell, which reads its start-up files;
on many clusters that costs a fifth of a second or more (module systems, conda, pyenv). A
shell kept open pays it once: every later command is one round trip. Commands run one at a
time, each in a subshell (so ``cd``, ``exit`` and variables do not leak into the next), with
its standard input from ``/dev/null`` or a here-document, and its end marked on standard
output (with the exit status) and standard error by a token no output can contain.
"""

from __future__ import annotations

import base64
import re
import select
import time
import uuid

import paramiko

from .sshconnect import Connection

# The shell the commands run in: POSIX sh, started from the user's login shell so that it
# inherits the environment (PATH) the start-up files set, whatever the login shell is.
START = "exec /bin/sh"


class ShellTimeout(Exception):
    """The command did not end in time; the shell is closed (the command may still run)."""


class ShellEnded(Exception):
    """The channel closed before the command's end mark arrived."""


def frame(command: str, input: str | None, token: str) -> str:
    """The text sent to the shell for one command, whose standard input is ``input`` exactly:
    a here-document, base64-encoded when it does not end with a newline (a here-document
    always does)."""
    head, tail = "(\n", "\n)"
    if not input:
        tail += " </dev/null"
    elif input.endswith("\n"):
        tail += f" <<'{token}in'\n{input}{token}in"
    else:
        data = base64.encodebytes(input.encode()).decode()
        head, tail = "{ base64 -d | (\n", f"\n); }} <<'{token}in'\n{data}{token}in"
    return f"{head}{command}{tail}\nprintf '\\n{token} %d\\n' \"$?\"\nprintf '\\n{token}\\n' >&2\n"


class RemoteShell:
    """One long-lived ``sh`` on a session channel; not thread-safe (one command at a time)."""

    def __init__(self, chan: paramiko.Channel, owner: Connection) -> None:
        self.chan = chan
        self.owner = owner  # the connection it lives on
        self.broken = False

    @classmethod
    def start(cls, chan: paramiko.Channel, owner: Connection, timeout: float) -> RemoteShell:
        """Start the shell and wait until it answers (its start-up files have run)."""
        shell = cls(chan, owner)
        chan.exec_command(START)
        status, _, _ = shell.run("true", None, timeout)
        if status != 0:
            shell.close()
            raise ShellEnded(f"the remote shell answered a test command with status {status}")
        return shell

    def close(self) -> None:
        self.broken = True
        try:
            self.chan.close()
        except Exception:  # closing what is already broken  # noqa: BLE001
            pass

    def run(
        self, command: str, input: str | None, timeout: float | None
    ) -> tuple[int, bytes, bytes]:
        """(exit status, stdout, stderr) of ``command``. On any exception the shell is closed."""
        token = "hx" + uuid.uuid4().hex
        try:
            self.chan.sendall(frame(command, input, token).encode())
            return self._collect(token.encode(), timeout)
        except BaseException:
            self.close()
            raise

    def _collect(self, token: bytes, timeout: float | None) -> tuple[int, bytes, bytes]:
        deadline = None if timeout is None else time.monotonic() + timeout
        out_end = re.compile(b"\n" + token + b" (-?\\d+)\n")
        err_end = b"\n" + token + b"\n"
        out, err = bytearray(), bytearray()
        status: int | None = None
        out_at = err_at = -1
        out_scan = err_scan = 0  # where the next search starts: output is searched once
        chan = self.chan
        while True:
            ended = chan.closed or chan.eof_received  # before draining: keep the last bytes
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            if status is None:
                m = out_end.search(out, out_scan)
                if m is not None:
                    status, out_at = int(m.group(1)), m.start()
                out_scan = max(0, len(out) - len(token) - 24)
            if err_at < 0:
                err_at = err.find(err_end, err_scan)
                err_scan = max(0, len(err) - len(err_end))
            if status is not None and err_at >= 0:
                return status, bytes(out[:out_at]), bytes(err[:err_at])
            if ended:
                raise ShellEnded("the remote shell ended before the command did")
            wait = 1.0
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise ShellTimeout
            select.select([chan.fileno()], [], [], wait)
