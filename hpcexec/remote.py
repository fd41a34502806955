"""Setting up the other end when jobs run on another host: the SSH transport, the remote
directories and a check that the remote interpreter can run hpcexec's jobs."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import cloudpickle

from . import __version__
from .errors import BackendError, TransportError
from .transport.base import Transport

if TYPE_CHECKING:
    from .settings import ExecutorSettings

log = logging.getLogger(__name__)

DEFAULT_REMOTE_DIR = "~/.hpcexec"
DEFAULT_REMOTE_PYTHON = "python3"
_PROBE = (
    "import json, shutil, sys\n"
    "out = {'python': list(sys.version_info[:2]), 'executable': sys.executable,\n"
    "       'which': {c: shutil.which(c) for c in sys.argv[1:]}}\n"
    "for name in ('hpcexec', 'cloudpickle'):\n"
    "    try:\n"
    "        out[name] = __import__(name).__version__\n"
    "    except Exception as e:\n"
    "        out[name] = None\n"
    "        out[name + '_error'] = f'{type(e).__name__}: {e}'\n"
    "print(json.dumps(out))\n"
)


def is_local(host: str | None) -> bool:
    return host in (None, "", "localhost")


@dataclass(frozen=True)
class SSHOptions:
    """How to reach a remote host and where job files live there."""

    remote_dir: str | None = None
    ssh_key: str | None = None
    known_hosts: str | None = None
    trust_on_first_use: bool = False

    @classmethod
    def of(cls, settings: ExecutorSettings) -> SSHOptions:
        """The SSH options among an executor's settings (its fields of the same names)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})

    def given(self) -> list[str]:
        return [k for k, v in vars(self).items() if v not in (None, False)]


def open_ssh(host: str, opts: SSHOptions) -> Transport:
    """One SSH connection to ``host`` (a ``~/.ssh/config`` alias or ``user@host[:port]``)."""
    if not isinstance(host, str):
        raise BackendError(
            f"host must be a string such as 'mycluster' (an alias from "
            f"~/.ssh/config) or 'user@host:port', not {host!r}"
        )
    from .transport.ssh import SSHTransport  # paramiko is imported only for remote work

    return SSHTransport(
        host,
        ssh_key=opts.ssh_key,
        known_hosts=opts.known_hosts,
        trust_on_first_use=opts.trust_on_first_use,
    )


@dataclass(frozen=True)
class RemotePython:
    """The interpreter jobs run with on the remote host, checked."""

    path: str  # as the job script calls it (``~`` expanded)
    executable: str  # what it resolved to
    version: tuple[int, int]
    commands: dict[str, str | None]  # where each command asked about is on PATH there


def check_python(transport: Transport, python: str, commands: Sequence[str] = ()) -> RemotePython:
    """Check that ``python`` on the remote host has hpcexec and cloudpickle at versions that
    can run this client's jobs; say exactly what to install when not. Also finds
    ``commands`` on the PATH there, in the same round trip."""
    path = transport.expand_path(python) if python.startswith("~") else python
    where = f"{path} on {transport.host}"
    fix = "pass python= the path of an interpreter that exists there"
    try:
        r = transport.run([path, "-c", _PROBE, *commands], idempotent=True)
    except TransportError as e:
        if "command not found" not in str(e):
            raise
        raise BackendError(f"cannot run the remote Python {where}: not found; {fix}") from None
    if not r.ok:
        raise BackendError(
            f"cannot run the remote Python {where}: {(r.stderr or r.stdout).strip()[-300:]}; {fix}"
        )
    try:
        found = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        raise TransportError(f"unexpected answer from {where}: {r.stdout[-300:]!r}") from e
    install = (
        f"{shlex.quote(path)} -m pip install 'hpcexec=={__version__}' "
        f"'cloudpickle=={cloudpickle.__version__}'"
    )
    missing = [n for n in ("hpcexec", "cloudpickle") if found.get(n) is None]
    if missing:
        why = "; ".join(found.get(f"{n}_error", "") for n in missing)
        raise BackendError(
            f"the remote Python {where} lacks {' and '.join(missing)} ({why}). "
            f"Install them there with: {install}"
        )
    if _minor(found["hpcexec"]) != _minor(__version__):
        raise BackendError(
            f"the remote Python {where} has hpcexec {found['hpcexec']}, this "
            f"client {__version__}; the job files of one are not the other's. "
            f"Install the same version there with: {install}"
        )
    if found["cloudpickle"].split(".")[0] != cloudpickle.__version__.split(".")[0]:
        raise BackendError(
            f"the remote Python {where} has cloudpickle {found['cloudpickle']}, "
            f"this client {cloudpickle.__version__}; install the same there "
            f"with: {install}"
        )
    version = tuple(found["python"])
    if version != sys.version_info[:2]:
        log.warning(
            "the remote Python %s is %d.%d and this one %d.%d: functions sent by value "
            "(lambdas, those of your main script) may not load there; use the same "
            "Python version on both sides",
            where,
            *version,
            *sys.version_info[:2],
        )
    return RemotePython(path, found["executable"], (version[0], version[1]), found["which"])


def _minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])
