"""Prologue, epilogue and auxiliary scripts (as in clusterjob): their checks, rendering and
running, and the claim that runs an epilogue once.

- ``prologue=``: shell text run on the submitting machine before a job is submitted (to
  copy inputs up, say); if it fails, nothing is submitted.
- ``epilogue=``: shell text run on the submitting machine once, the first time a client
  following the job sees it ended (to fetch outputs, say). Its record holds the text and
  whether it ran, so it runs at most once across re-runs, crashes and clients: a client
  claims it in the record before running it, and a claim whose client has died is never
  run again (the record says ``interrupted``).
- ``aux_scripts={"name.sh": text}``: files written beside the job script.

All three are rendered with the body's ``{placeholders}`` (the resources, ``{name}``) and
``{jobdir}``, the job's directory (where the job script and the auxiliary scripts are).
Their values are checked with the other job options (:mod:`hpcexec.options`); the names of
their logs are the layout's (:data:`~hpcexec.layout.PROLOGUE_LOG`, ``EPILOGUE_LOG``).
"""

from __future__ import annotations

import logging
import os
import platform
import shlex
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from .backends.local import parse_proc_stat
from .errors import TransportError
from .resources import Resources
from .script import fill_placeholders, placeholder_values
from .transport.base import CommandResult
from .transport.local import LocalShell

log = logging.getLogger(__name__)

TIMEOUT = 3600.0  # seconds a prologue or an epilogue may run
FINAL = ("done", "failed", "interrupted")  # epilogue states after which futures complete


def render(
    text: str,
    res: Resources,
    name: str,
    jobdir: str,
    user_values: Mapping[str, str | None] | None = None,
) -> str:
    """``text`` with the body's placeholders, ``{jobdir}`` and the user's ``vars`` filled
    (shell-quoted)."""
    values = placeholder_values(res, name, jobdir, user_values)
    return fill_placeholders(text, values, user_values or ())


def run(text: str, env: Mapping[str, str]) -> CommandResult:
    """Run hook text with bash on this machine, ``env`` exported first.

    Through the local transport even when jobs run on another host: a prologue or an
    epilogue belongs to the submitting machine (it copies inputs up, or outputs down), as in
    clusterjob. It runs in the client's current directory, for at most :data:`TIMEOUT`."""
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    return LocalShell().run(["/bin/bash", "-c", exports + text], timeout=TIMEOUT)


def log_text(result: CommandResult | None, error: str | None = None) -> bytes:
    """What a hook's log file holds: its exit status, then its output streams."""
    if result is None:
        return f"could not run: {error}\n".encode()
    return (
        f"exit code {result.returncode}\n--- stdout ---\n{result.stdout}"
        f"--- stderr ---\n{result.stderr}"
    ).encode()


def hook_env(key: str, name: str, jobdir: str, host: str) -> dict[str, str]:
    """Variables a prologue or an epilogue sees."""
    return {
        "HPCEXEC_JOB_KEY": key,
        "HPCEXEC_JOB_NAME": name,
        "HPCEXEC_JOB_DIR": jobdir,
        "HPCEXEC_JOB_HOST": host,
    }


# -- the epilogue's claim ---------------------------------------------------------------------
def state_word(state: str | None) -> str | None:
    """``running``, ``done``, ``failed``, ``interrupted`` (None: not run yet)."""
    return state.split(":", 1)[0] if state else None


def _start_ticks(pid: int) -> int | None:
    text = LocalShell().process_stat(pid)
    st = parse_proc_stat(text) if text else None
    return st.start if st and st.state not in ("Z", "X") else None


_running: set[tuple[str, str]] = set()  # (cache database, key) of epilogues run by this process
_running_lock = threading.Lock()


def running(db: os.PathLike | str, key: str, now: bool) -> None:
    """Note that this process runs (``now``) or has finished running a job's epilogue."""
    with _running_lock:
        (_running.add if now else _running.discard)((str(db), key))


def is_running(db: os.PathLike | str, key: str) -> bool:
    with _running_lock:
        return (str(db), key) in _running


def claim() -> str:
    """The epilogue state a client writes before it runs an epilogue: who and since when."""
    pid = os.getpid()
    return f"running: {platform.node()} {pid}:{_start_ticks(pid) or 0} {time.time():.0f}"


@dataclass(frozen=True)
class Claim:
    host: str
    pid: int
    start: int
    since: float

    @classmethod
    def parse(cls, state: str) -> Claim | None:
        try:
            host, proc, since = state.split(":", 1)[1].split()
            pid, start = proc.split(":")
            return cls(host, int(pid), int(start), float(since))
        except ValueError:
            return None

    def mine(self) -> bool:
        return self.host == platform.node() and self.pid == os.getpid()

    def dead(self) -> bool:
        """Its client has surely ended: gone from this host, or (on another host, where
        it cannot be looked at) it has held the claim longer than an epilogue may run."""
        if self.host != platform.node():
            return time.time() - self.since > TIMEOUT + 60
        return _start_ticks(self.pid) != self.start


def interrupted(c: Claim | None) -> str:
    who = f"pid {c.pid} on {c.host}" if c else "its client"
    return (
        f"interrupted: the client running it ({who}) ended before it finished; it is not run again"
    )


def hook_failure(what: str, result: CommandResult | None, error: str | None) -> str:
    """One line saying how a prologue or an epilogue failed, with the end of its stderr."""
    if result is None:
        return f"{what} could not be run: {error}"
    tail = " | ".join(result.stderr.strip().splitlines()[-3:])
    return f"{what} exited with code {result.returncode}" + (f": {tail}" if tail else "")


def run_logged(text: str, env: Mapping[str, str]) -> tuple[CommandResult | None, str | None]:
    """:func:`run`, with a failure to run it at all as an error text instead of raising."""
    try:
        return run(text, env), None
    except TransportError as e:
        return None, str(e)
