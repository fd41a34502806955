"""Which environment a job runs in, and which of the client's modules are its own.

Two descriptions, each computed once:

- :class:`Environment`, one per client: whether its jobs run on this host, the client's own
  import directories (which local jobs put on their ``sys.path``) and where the client's
  installed packages live (a module there never travels by value, even when a project's
  ``.venv`` lies under the working directory).
- :class:`Interpreter`, one per local interpreter: its prefixes and import path as a process
  started with it sees them. Its :meth:`~Interpreter.identity` names the fork server, so a
  server only forks jobs for the environment it was started in.

A virtual environment's ``python`` is a link to its base interpreter: every venv made from one
base resolves to the same binary. So an interpreter is the path it is given, never resolved,
with what it says of itself: this process's own interpreter is read from :mod:`sys` (free),
another one is asked once per process (one short interpreter start, never one per job). The
two can differ for one environment (a script's own additions to ``sys.path``); then each gets
a server of its own, never one of another environment.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass

# The directory that holds the hpcexec package: the copy that jobs and servers import.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PACKAGE_DIR = os.path.join(PACKAGE_PARENT, "hpcexec")
_INSTALL_DIRS = ("site-packages", "dist-packages")
#: runs ``argv`` with environment ``env`` on this machine and returns what it printed;
#: raises OSError saying why it could not
Ask = Callable[[list[str], dict[str, str]], str]
# sys.path[0] is the script's directory, unless -P (sys.flags.safe_path, Python 3.11 on) left it out
PROBE = (
    "import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, "
    "sys.path[0 if getattr(sys.flags, 'safe_path', False) else 1:]]))"
)


def launch_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment ``base`` (this process's by default) for an interpreter that must
    import this copy of hpcexec, whatever its working directory (a fork server, or the probe
    of an interpreter)."""
    env = dict(os.environ if base is None else base)
    path = os.pathsep.join(p for p in (PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": path}


@functools.cache
def _copy_stamp() -> str:
    """This copy of hpcexec: its version and its files' times (edited, it is another copy
    for the next client process)."""
    from . import __version__

    with os.scandir(_PACKAGE_DIR) as entries:
        stamps = sorted((e.name, e.stat().st_mtime_ns) for e in entries if e.name.endswith(".py"))
    return f"{__version__} {stamps}"


@dataclass(frozen=True)
class Interpreter:
    """A local Python interpreter as a process started with it sees itself."""

    python: str  # as given (absolute), never resolved: a venv's python links to its base
    prefix: str
    base_prefix: str
    exec_prefix: str
    path: tuple[str, ...]  # its import path, the script's own entry aside

    def identity(self) -> str:
        """A stable hash of this interpreter, this copy of hpcexec and this user: processes
        with the same identity can run each other's jobs."""
        return _identity(self, os.getuid())


@functools.cache
def _identity(interp: Interpreter, uid: int) -> str:
    ident = json.dumps(
        [
            uid,
            interp.python,
            interp.prefix,
            interp.base_prefix,
            interp.exec_prefix,
            list(interp.path),
            PACKAGE_PARENT,
            _copy_stamp(),
        ]
    )
    return hashlib.sha256(ident.encode()).hexdigest()


def runs_here(python: str) -> bool:
    """Whether ``python`` is this process's interpreter: the same file found in the same
    directory (which is where a venv's ``pyvenv.cfg`` is looked for)."""
    here = sys.executable
    if not here:
        return False
    if os.path.abspath(python) == os.path.abspath(here):
        return True
    try:
        return os.path.samefile(python, here) and os.path.samefile(
            os.path.dirname(os.path.abspath(python)), os.path.dirname(here)
        )
    except OSError:
        return False


def interpreter(python: str, ask: Ask) -> Interpreter:
    """The description of the local interpreter ``python``: this process's own from
    :mod:`sys` (as it was at the first call), another one by running :data:`PROBE` in it
    once per process through ``ask`` (the fork server's client runs it: this module runs
    no process). Raises OSError when it cannot be asked (no such file, not a Python, a
    failing start)."""
    if os.sep not in python:  # a command name, as a job script would find it
        python = shutil.which(python) or python
    if runs_here(python):
        return _running(os.path.abspath(python))
    return _asked(os.path.abspath(python), os.environ.get("PYTHONPATH", ""), ask)


@functools.cache
def _running(python: str) -> Interpreter:
    path = sys.path[0 if getattr(sys.flags, "safe_path", False) else 1 :]  # see PROBE
    return Interpreter(python, sys.prefix, sys.base_prefix, sys.exec_prefix, tuple(path))


@functools.cache
def _asked(python: str, pythonpath: str, ask: Ask) -> Interpreter:
    # pythonpath is part of the key: the answer depends on it (launch_env passes it on).
    out = ask([python, "-c", PROBE], launch_env())
    try:
        prefix, base_prefix, exec_prefix, path = json.loads(out)
    except ValueError:
        raise OSError(f"{python} is not a Python interpreter (it printed {out[:80]!r})") from None
    return Interpreter(python, prefix, base_prefix, exec_prefix, tuple(path))


@dataclass(frozen=True)
class Environment:
    """The environment of one client's jobs, described once when the client starts."""

    remote: bool  # the jobs run on another host, which cannot import from this one
    own_dirs: tuple[str, ...]  # the client's own import directories, resolved
    installs: tuple[str, ...]  # where the client's installed modules live: its prefixes

    @classmethod
    def describe(cls, *, remote: bool = False) -> Environment:
        """This process as a client (of jobs on another host if ``remote``): its working
        directory and the ``sys.path`` entries that are not installed packages are its own
        directories."""
        installs = tuple(
            dict.fromkeys(
                os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)
            )
        )
        own: list[str] = []
        for entry in [os.getcwd(), *sys.path]:
            if not entry or entry.endswith(".zip"):
                continue
            real = os.path.realpath(entry)
            if os.path.isdir(real) and not _installed(entry, real, installs) and real not in own:
                own.append(real)
        return cls(remote, tuple(own), installs)

    def is_installed(self, path: str) -> bool:
        """Whether the file or directory ``path`` belongs to an installation, not to the
        user's own code: it lies in a ``site-packages`` or ``dist-packages`` directory, or
        under the client interpreter's prefixes, wherever those are (a project's ``.venv``
        included)."""
        return _installed(path, os.path.realpath(path), self.installs)

    def job_sys_path(self) -> list[str]:
        """What a job puts on its ``sys.path``, so that a callable pickled by reference
        imports there as here: the client's own directories (none on another host, where
        this machine's paths mean nothing)."""
        return [] if self.remote else list(self.own_dirs)

    def own_modules(self) -> list[str]:
        """The imported modules that are the user's own code, one name each: those whose
        files lie under the own directories and are not installed, hpcexec and
        ``__main__`` aside."""
        prefixes = tuple(os.path.join(d, "") for d in self.own_dirs)
        found: dict[int, str] = {}  # one name per module object (an extension has aliases)
        dirs: dict[str, str] = {}  # resolved once per directory: a thousand modules, 60 ms
        for name, mod in list(sys.modules.items()):
            path = getattr(mod, "__file__", None)
            if not path or name == "__main__" or name.partition(".")[0] == "hpcexec":
                continue
            head, tail = os.path.split(path)
            if head not in dirs:
                dirs[head] = os.path.realpath(head)
            real = (
                os.path.realpath(path) if os.path.islink(path) else os.path.join(dirs[head], tail)
            )
            if not real.startswith(prefixes) or _installed(path, real, self.installs):
                continue
            if id(mod) not in found or name == getattr(mod, "__name__", None):
                found[id(mod)] = name
        return list(found.values())

    def by_value(self) -> list[str]:
        """The modules whose code goes inside payloads: on another host, the user's own
        modules (which it cannot import); none here."""
        return self.own_modules() if self.remote else []


def _installed(path: str, real: str, installs: tuple[str, ...]) -> bool:
    if any(part in _INSTALL_DIRS for p in (path, real) for part in p.split(os.sep)):
        return True
    return any(real == d or real.startswith(os.path.join(d, "")) for d in installs)
