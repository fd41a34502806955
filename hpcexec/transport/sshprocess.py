"""The shell lines that start a remote program: a missing one recognisable, a detached one
in a session of its own."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

NOT_FOUND_MARK = "hpcexec-ssh: command not found: "
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# POSIX sh: wait (at most about 5 s) until the background job $! leads its own session, or
# has already ended; fields after "comm) " in /proc/PID/stat: state ppid pgrp session.
_WAIT_FOR_SESSION = """pid=$!
n=0
while [ $n -lt 500 ]; do
  { read -r line < /proc/$pid/stat; } 2>/dev/null || break
  set -- ${line##*) }
  [ "$1" = Z ] || [ "$4" = "$pid" ] && break
  n=$((n + 1))
  sleep 0.01
done"""


def guard(argv: list[str]) -> str:
    """A shell line that makes a missing program recognisable (exit 127 and a mark)."""
    prog = shlex.quote(argv[0])
    mark = shlex.quote(NOT_FOUND_MARK + argv[0])
    return f"command -v {prog} >/dev/null 2>&1 || {{ echo {mark} >&2; exit 127; }}\n"


def not_found(status: int, stderr: str) -> bool:
    """Whether a command guarded by :func:`guard` failed because its program is missing."""
    return status == 127 and NOT_FOUND_MARK in stderr


def readable(stderr: str) -> str:
    """``stderr`` with the guard's mark in plain words."""
    return stderr.replace(NOT_FOUND_MARK, "command not found: ")


def env_assignments(env: Mapping[str, str] | None) -> str:
    """``env`` as the assignments that prefix a command (ValueError for an invalid name)."""
    for name in env or {}:
        if not _ENV_NAME.match(name):
            raise ValueError(f"invalid environment variable name {name!r}")
    return "".join(f"{k}={shlex.quote(v)} " for k, v in (env or {}).items())


def start_detached(argv: list[str], *, cwd: str, stdout: str, stderr: str, assign: str) -> str:
    """A script that starts ``argv`` (prefixed by the assignments ``assign``) in ``cwd`` in a
    session of its own, its output appended to ``stdout`` and ``stderr`` (full paths), and
    prints its pid once it leads the session."""
    redirect = (
        f">>{shlex.quote(stdout)} 2>&1"
        if stderr == stdout
        else f">>{shlex.quote(stdout)} 2>>{shlex.quote(stderr)}"
    )
    # setsid in a non-interactive shell's background job execs in place (the job is no
    # group leader), so $! becomes the session and process group leader itself. Answer
    # once it has, so that the group can be signalled at once.
    return (
        f"cd {shlex.quote(cwd)} || exit 1\n{guard(argv)}"
        f"{assign}setsid {shlex.join(argv)} </dev/null {redirect} &\n"
        f"{_WAIT_FOR_SESSION}\necho $pid"
    )
