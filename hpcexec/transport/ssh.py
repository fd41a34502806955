"""The SSH transport: commands and files on another host, over one SSH connection (paramiko).

Commands run in a POSIX shell kept open on a channel of that connection (see
:mod:`.sshshell`; a server that will not keep one gets an ``exec`` channel per command), and
every file moves through one SFTP session on it. The connection opens lazily, sends keepalives, and is opened again
after it drops. What may be repeated after a drop:

* reads, stat, listings, ``make_dir``, ``remove_tree``, whole-file writes and the transport's
  own status commands (``which``, ``cpu_count``) are retried once on a new connection;
* ``run`` (unless ``idempotent=True``), ``spawn_detached``, ``create_exclusive``, ``rename``,
  ``symlink`` and ``signal_group`` are not: when the connection drops after the request went
  out they raise :class:`~hpcexec.errors.TransportError`, because the remote side may or may
  not have done it. A drop noticed before sending (a dead connection, a channel that would not
  open) is repaired and the request sent as usual.

The parts: :mod:`.sshconnect` logs in, :mod:`.sshlink` keeps the connection,
:mod:`.sshcommands` runs command lines, :mod:`.sshfiles` moves files, :mod:`.sshprocess`
writes the lines that start programs.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shlex
import threading
from collections.abc import Mapping, Sequence

from ..errors import TransportError
from ..trust import PathStat
from . import sshprocess
from .base import CommandResult, Transport
from .sshcommands import Commands
from .sshconfig import Endpoint, load_config, resolve
from .sshconnect import Connection, Login
from .sshfiles import SFTPFiles
from .sshlink import Link

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = 15.0
DEFAULT_KEEPALIVE = 30


class SSHTransport(Transport):
    """Runs commands and moves files on ``host`` over one SSH connection.

    ``host`` is an alias from the ssh config or ``user@host[:port]``; it stays in
    :attr:`host` as given. Logs in with ``ssh_key`` (or the config's IdentityFile), the
    agent, and the default keys; never with a password. Host keys are checked against
    ``~/.ssh/known_hosts`` (or the config's UserKnownHostsFile), the system known-hosts
    files and ``known_hosts``: an unknown or changed key raises
    :class:`~hpcexec.errors.HostKeyError`, except that ``trust_on_first_use`` accepts an
    unknown key and appends it to ``known_hosts`` (or ``~/.ssh/known_hosts``).
    ``connections_opened`` counts the SSH connections opened to ``host``.
    """

    def __init__(
        self,
        host: str,
        *,
        ssh_key: str | os.PathLike[str] | None = None,
        known_hosts: str | os.PathLike[str] | None = None,
        trust_on_first_use: bool = False,
        ssh_config: str | os.PathLike[str] | None = None,
        connect_timeout: float | None = None,
        keepalive: int | None = None,
        persistent_shell: bool = True,
    ) -> None:
        self.host = host
        endpoint = resolve(
            host, load_config(ssh_config), ssh_key=None if ssh_key is None else os.fspath(ssh_key)
        )
        saved = None if known_hosts is None else os.fspath(known_hosts)
        if saved is not None and not os.path.isfile(os.path.expanduser(saved)):
            log.warning(
                "known_hosts=%r does not exist%s",
                saved,
                "; new host keys will be saved there" if trust_on_first_use else "",
            )
        login = Login(
            host,
            endpoint,
            saved,
            trust_on_first_use,
            float(connect_timeout or endpoint.connect_timeout or DEFAULT_CONNECT_TIMEOUT),
            int(keepalive if keepalive is not None else endpoint.keepalive or DEFAULT_KEEPALIVE),
        )
        self._link = Link(login)
        self._commands = Commands(self._link, persistent_shell=persistent_shell)
        self._files = SFTPFiles(self._link)
        self._uid: int | None = None
        self._uid_lock = threading.Lock()  # asked once: a second caller waits for the answer

    @property
    def endpoint(self) -> Endpoint:
        """Where ``host`` leads (after the ssh config)."""
        return self._link.login.endpoint

    @property
    def known_hosts(self) -> str | None:
        return self._link.login.known_hosts

    @property
    def trust_on_first_use(self) -> bool:
        return self._link.login.trust_on_first_use

    @property
    def connect_timeout(self) -> float:
        return self._link.login.connect_timeout

    @property
    def keepalive(self) -> int:
        return self._link.login.keepalive

    @property
    def connections_opened(self) -> int:
        return self._link.connections_opened

    @property
    def persistent_shell(self) -> bool:
        """Whether commands run in kept shells (false once the server has kept none)."""
        return self._commands.persistent_shell

    @persistent_shell.setter
    def persistent_shell(self, value: bool) -> None:
        self._commands.persistent_shell = value

    @property
    def _conn(self) -> Connection | None:
        return self._link.current

    def __repr__(self) -> str:
        return f"SSHTransport({self.host!r} -> {self.endpoint})"

    def __enter__(self) -> SSHTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        self._commands.close()
        self._link.close()

    # -- commands ---------------------------------------------------------------------

    def _execute(
        self,
        command: str,
        *,
        input: str | None = None,
        timeout: float | None = 60.0,
        idempotent: bool,
        label: str | None = None,
    ) -> tuple[int, str, str]:
        return self._commands.execute(
            command, input=input, timeout=timeout, idempotent=idempotent, label=label
        )

    def _argv(self, argv: Sequence[str]) -> list[str]:
        argv = [os.fspath(a) for a in argv]
        if not argv:
            raise ValueError("empty command")
        argv[0] = self.expand_path(argv[0])
        return argv

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float | None = 60.0,
        idempotent: bool = False,
    ) -> CommandResult:
        """Run ``argv`` in the remote login shell (quoted with :func:`shlex.join`).
        ``idempotent=True`` allows running it again when the connection drops while it runs;
        otherwise that raises :class:`TransportError`. A leading ``~`` in ``argv[0]`` is the
        remote home."""
        args = self._argv(argv)
        command = shlex.join(args)
        status, out, err = self._execute(
            sshprocess.guard(args) + command,
            input=input,
            timeout=timeout,
            idempotent=idempotent,
            label=command,
        )
        if sshprocess.not_found(status, err):
            raise TransportError(
                f"command not found on {self.host}: {args[0]} (is it installed "
                "there and on the PATH of a non-interactive SSH login?)"
            )
        return CommandResult(tuple(args), status, out, err)

    def which(self, command: str) -> str | None:
        status, out, _ = self._execute(f"command -v {shlex.quote(command)}", idempotent=True)
        path = out.strip().splitlines()[0] if status == 0 and out.strip() else ""
        return path or None

    def spawn_detached(
        self,
        argv: Sequence[str],
        *,
        cwd: str,
        stdout: str,
        stderr: str,
        env: Mapping[str, str] | None = None,
    ) -> int:
        args = self._argv(argv)
        out, err = self.expand_path(stdout), self.expand_path(stderr)
        assign = sshprocess.env_assignments(env)
        start = sshprocess.start_detached(
            args, cwd=self.expand_path(cwd), stdout=out, stderr=err, assign=assign
        )
        status, text, errors = self._execute(
            start, idempotent=False, label=f"start {shlex.join(args)}"
        )
        if status != 0 or not text.strip().isdigit():
            raise TransportError(
                f"could not start {args[0]} in {cwd} on {self.host}: "
                f"{sshprocess.readable(errors).strip()}"
                f" (exit status {status})"
            )
        return int(text.strip())

    def signal_group(self, pid: int, signum: int) -> bool:
        return self._kill(f"-{int(pid)}", signum, "process group")

    def signal_process(self, pid: int, signum: int) -> bool:
        return self._kill(str(int(pid)), signum, "process")

    def _kill(self, target: str, signum: int, what: str) -> bool:
        status, _, err = self._execute(f"kill -{int(signum)} {target}", idempotent=False)
        if status == 0:
            return True
        if "No such process" in err:
            return False
        raise TransportError(
            f"could not signal {what} {target.lstrip('-')} on {self.host}: {err.strip()}"
        )

    def cpu_count(self) -> int:
        _status, out, err = self._execute(
            "nproc 2>/dev/null || getconf _NPROCESSORS_ONLN", idempotent=True
        )
        try:
            return int(out.strip())
        except ValueError:
            raise TransportError(
                f"cannot count the CPUs of {self.host}: nproc printed "
                f"{out.strip()!r} {err.strip()!r}"
            ) from None

    def remove_tree(self, path: str) -> None:
        p = self.expand_path(path)
        if posixpath.normpath(p) in ("/", ".", posixpath.normpath(self._files.home())):
            raise TransportError(f"refusing to remove {path!r} on {self.host}")
        status, _, err = self._execute(f"rm -rf -- {shlex.quote(p)}", idempotent=True)
        if status != 0:
            raise TransportError(f"could not remove {p} on {self.host}: {err.strip()}")

    def user_id(self) -> int:
        with self._uid_lock:
            if self._uid is None:
                status, out, err = self._execute("id -u", idempotent=True)
                if status != 0 or not out.strip().isdigit():
                    raise TransportError(
                        f"`id -u` failed on {self.host} (exit status {status}): "
                        f"{(err or out).strip()}"
                    )
                self._uid = int(out.strip())
            return self._uid

    # -- files (see :mod:`.sshfiles`) ---------------------------------------------------

    def expand_path(self, path: str | os.PathLike[str]) -> str:
        """``path`` with a leading ``~`` replaced by the remote home directory."""
        return self._files.expand_path(path)

    def read_bytes(self, path: str) -> bytes:
        return self._files.read_bytes(path)

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes | None]:
        """Many files in two round trips (see :mod:`.sftpbatch`); None for a missing one."""
        return self._files.read_files(paths)

    def read_tail(self, path: str, max_bytes: int) -> str:
        return self._files.read_tail(path, max_bytes)

    def process_stat(self, pid: int) -> str | None:
        return self._files.process_stat(pid)

    def write_bytes(self, path: str, data: bytes, *, atomic: bool = True) -> None:
        self._files.write_bytes(path, data, atomic=atomic)

    def stage(
        self,
        dirs: Sequence[str],
        files: Mapping[str, bytes],
        links: Mapping[str, str] | None = None,
    ) -> None:
        """Three round trips for any number (see :mod:`.sftpbatch`)."""
        self._files.stage(dirs, files, links or {})

    def renames(self, pairs: Sequence[tuple[str, str]]) -> list[OSError | None]:
        return self._files.renames(pairs)

    def exists(self, path: str) -> bool:
        return self._files.exists(path)

    def create_exclusive(self, path: str, data: bytes = b"") -> bool:
        return self._files.create_exclusive(path, data)

    def list_dir(self, path: str) -> list[str]:
        return self._files.list_dir(path)

    def list_dirs(self, paths: Sequence[str]) -> dict[str, list[str]]:
        """Many directories in three round trips (see :mod:`.sftpbatch`)."""
        return self._files.list_dirs(paths)

    def make_dir(self, path: str) -> None:
        self._files.make_dir(path)

    def stat_path(self, path: str) -> PathStat:
        return self._files.stat_path(path)

    def stat_paths(self, paths: Sequence[str]) -> dict[str, PathStat | None]:
        """One round trip for any number (see :mod:`.sftpbatch`)."""
        return self._files.stat_paths(paths)

    def chmod(self, path: str, mode: int) -> None:
        self._files.chmod(path, mode)

    def rename(self, src: str, dst: str) -> None:
        self._files.rename(src, dst)

    def symlink(self, target: str, link: str) -> None:
        self._files.symlink(target, link)
