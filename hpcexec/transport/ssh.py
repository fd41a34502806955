"""Commands and files on another host, over one SSH connection (paramiko).

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
"""
from __future__ import annotations

import errno
import logging
import os
import posixpath
import re
import select
import shlex
import stat
import threading
import time
import uuid
from typing import Callable, Mapping, Sequence, TypeVar

import paramiko

from ..errors import HostKeyError, TransportError
from ..trust import PathStat
from .base import CommandResult, Transport
from .sftpbatch import read_files
from .sshshell import RemoteShell, ShellEnded, ShellTimeout
from .sshconfig import Endpoint, HostKeyPolicy, changed_key_error, known_hosts, load_config, resolve

log = logging.getLogger(__name__)
# paramiko logs a failed connection's traceback from its own thread; the TransportError we
# raise says what went wrong, so keep Python's last-resort handler from printing it too.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT = 15.0
DEFAULT_KEEPALIVE = 30
# A stalled SFTP request fails after this long (a hung remote filesystem, a dead network).
SFTP_TIMEOUT = 120.0
# Commands running at once on the connection: sshd's MaxSessions (default 10) counts them and
# the SFTP session.
MAX_CONCURRENT_COMMANDS = 8
# How long a new shell's start-up files may take (a shared home on a loaded filesystem).
SHELL_START_TIMEOUT = 120.0
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


class _CommandTimeout(Exception):
    pass


class _Dropped(Exception):
    """The connection (or the shell on it) ended after a command was sent."""


class _Connection:
    """One logged-in SSH connection (and the jump-host connections it runs through)."""

    def __init__(self, client: paramiko.SSHClient, hops: list[paramiko.SSHClient]) -> None:
        self.client = client
        self.hops = hops
        self.sftp: paramiko.SFTPClient | None = None

    @property
    def transport(self) -> paramiko.Transport:
        t = self.client.get_transport()
        if t is None:
            raise paramiko.SSHException("SSH session not active")
        return t

    def alive(self) -> bool:
        t = self.client.get_transport()
        return t is not None and t.is_active()

    def sftp_alive(self) -> bool:
        return self.sftp is not None and not self.sftp.get_channel().closed and self.alive()

    def sftp_session(self) -> paramiko.SFTPClient:
        if not self.sftp_alive():
            self.drop_sftp()
            self.sftp = self.client.open_sftp()
            self.sftp.get_channel().settimeout(SFTP_TIMEOUT)
        return self.sftp

    def drop_sftp(self) -> None:
        sftp, self.sftp = self.sftp, None
        if sftp is not None:
            try:
                sftp.close()
            except Exception:  # closing what is already broken
                pass

    def close(self) -> None:
        self.drop_sftp()
        for c in [self.client, *reversed(self.hops)]:
            try:
                c.close()
            except Exception:
                pass


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

    def __init__(self, host: str, *, ssh_key: str | os.PathLike | None = None,
                 known_hosts: str | os.PathLike | None = None, trust_on_first_use: bool = False,
                 ssh_config: str | os.PathLike | None = None,
                 connect_timeout: float | None = None, keepalive: int | None = None,
                 persistent_shell: bool = True) -> None:
        self.host = host
        self.endpoint: Endpoint = resolve(host, load_config(ssh_config),
                                          ssh_key=None if ssh_key is None else os.fspath(ssh_key))
        self.known_hosts = None if known_hosts is None else os.fspath(known_hosts)
        if self.known_hosts is not None and not os.path.isfile(os.path.expanduser(self.known_hosts)):
            log.warning("known_hosts=%r does not exist%s", self.known_hosts,
                        "; new host keys will be saved there" if trust_on_first_use else "")
        self.trust_on_first_use = trust_on_first_use
        self.connect_timeout = float(connect_timeout or self.endpoint.connect_timeout
                                     or DEFAULT_CONNECT_TIMEOUT)
        self.keepalive = int(keepalive if keepalive is not None
                             else self.endpoint.keepalive or DEFAULT_KEEPALIVE)
        self.connections_opened = 0
        self._conn: _Connection | None = None
        self._lock = threading.Lock()          # opening and dropping the connection
        self._sftp_lock = threading.RLock()    # one SFTP request at a time (paramiko needs it)
        self._commands = threading.BoundedSemaphore(MAX_CONCURRENT_COMMANDS)
        self._home: str | None = None
        self._uid: int | None = None
        self.persistent_shell = persistent_shell
        self._idle_shells: list[RemoteShell] = []
        self._shell_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SSHTransport({self.host!r} -> {self.endpoint})"

    def __enter__(self) -> SSHTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the connection ---------------------------------------------------------------

    def _connection(self) -> _Connection:
        """The live connection, opened (again) when there is none."""
        with self._lock:
            conn = self._conn
            if conn is not None:
                if conn.alive():
                    return conn
                log.warning("the SSH connection to %s dropped; connecting again", self.host)
                conn.close()
                self._conn = None
            self._conn = self._open()
            self.connections_opened += 1
            return self._conn

    def _discard(self, conn: _Connection) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
        conn.close()

    def _open(self) -> _Connection:
        chain = [*self.endpoint.jumps, self.endpoint]
        t0 = time.monotonic()
        opened: list[paramiko.SSHClient] = []
        sock = None
        try:
            for i, ep in enumerate(chain):
                if sock is None and ep.proxy_command:
                    try:
                        sock = paramiko.ProxyCommand(ep.proxy_command)
                    except (OSError, ValueError, paramiko.SSHException) as e:
                        raise TransportError(f"cannot start the ProxyCommand for {ep.alias!r} "
                                             f"({ep.proxy_command}): {e}") from e
                client = self._login(ep, sock, via=chain[i - 1] if i else None)
                opened.append(client)
                client.get_transport().set_keepalive(self.keepalive)
                sock = None
                if i + 1 < len(chain):
                    nxt = chain[i + 1]
                    try:
                        sock = client.get_transport().open_channel(
                            "direct-tcpip", (nxt.hostname, nxt.port), ("127.0.0.1", 0),
                            timeout=self.connect_timeout)
                    except (paramiko.SSHException, OSError) as e:
                        raise TransportError(
                            f"jump host {ep} could not open a connection to "
                            f"{nxt.hostname}:{nxt.port} for {self.host!r}: {e} (is the address "
                            "right, and TCP forwarding allowed on the jump host?)") from e
        except BaseException:
            for c in reversed(opened):
                c.close()
            raise
        log.info("connected to %s (%s) in %.2f s", self.host, self.endpoint,
                 time.monotonic() - t0)
        return _Connection(opened[-1], opened[:-1])

    def _login(self, ep: Endpoint, sock: object, via: Endpoint | None) -> paramiko.SSHClient:
        files, save_to = known_hosts(ep, self.known_hosts)
        client = paramiko.SSHClient()
        try:
            for f in files:
                client.load_system_host_keys(f)
        except (OSError, paramiko.SSHException) as e:
            raise TransportError(f"cannot read the known-hosts file: {e}") from e
        client.set_missing_host_key_policy(
            HostKeyPolicy(ep, files, save_to, self.trust_on_first_use))
        how = f"{ep} (for {self.host!r}" + (f", through {via})" if via else ")")
        ct = self.connect_timeout
        try:
            client.connect(
                ep.hostname, ep.port, username=ep.user,
                key_filename=list(ep.identity_files) or None,
                allow_agent=not ep.identities_only, look_for_keys=not ep.identity_files,
                timeout=ct, banner_timeout=ct, auth_timeout=ct, channel_timeout=ct, sock=sock)
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as e:
            client.close()
            raise changed_key_error(ep, files, e.key, e.expected_key) from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            t = client.get_transport()
            refused = isinstance(e, paramiko.AuthenticationException) or (
                t is not None and t.is_active() and not t.is_authenticated())
            client.close()
            if refused:  # the server answered, but took none of our keys
                raise TransportError(self._auth_failure(ep, how, e)) from None
            raise TransportError(
                f"cannot connect to {how}: {e or type(e).__name__}. Is the host up, sshd "
                f"listening on port {ep.port}, and the name right? ({ct:g} s timeout)") from e
        return client

    @staticmethod
    def _auth_failure(ep: Endpoint, how: str, e: Exception) -> str:
        locked = [f for f in ep.identity_files if _encrypted(f)]
        tried = (", ".join(ep.identity_files) if ep.identity_files
                 else "~/.ssh/id_rsa, id_ecdsa, id_ed25519")
        text = (f"SSH login to {how} failed ({type(e).__name__}): tried {tried}"
                f"{'' if ep.identities_only else ' and the ssh-agent keys'}. Pass ssh_key=, add "
                f"an IdentityFile line for {ep.alias} to ~/.ssh/config, or load the key into "
                "ssh-agent (ssh-add KEY); check that its public half is in the remote "
                "~/.ssh/authorized_keys.")
        if locked:
            text += (f" {', '.join(locked)} is protected by a passphrase: hpcexec never asks "
                     "for passphrases, load it with `ssh-add " + shlex.quote(locked[0]) + "`.")
        return text

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        with self._shell_lock:
            shells, self._idle_shells = self._idle_shells, []
        for shell in shells:
            shell.close()
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            log.debug("closed the SSH connection to %s", self.host)

    # -- commands ---------------------------------------------------------------------

    def _open_channel(self) -> tuple[_Connection, paramiko.Channel]:
        """A new session channel; a dead connection is replaced first (nothing was sent)."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                return conn, conn.transport.open_session(timeout=self.connect_timeout)
            except (paramiko.SSHException, OSError, EOFError) as e:
                if conn.alive():
                    raise TransportError(f"{self.host} refused a new SSH session: {e} (too many "
                                         "sessions at once? see MaxSessions in its "
                                         "sshd_config)") from e
                self._discard(conn)
                if attempt == 2:
                    raise TransportError(f"cannot open an SSH session on {self.host}: {e}") from e
                log.warning("the SSH connection to %s dropped (%s); connecting again",
                            self.host, e)
        raise AssertionError("unreachable")

    def _execute(self, command: str, *, input: str | None = None, timeout: float | None = 60.0,
                 idempotent: bool, label: str | None = None) -> tuple[int, str, str]:
        """Run a shell command line; (exit status, stdout, stderr). ``label`` names it in
        messages."""
        label = label or command
        log.debug("ssh %s: %s", self.host, label)
        with self._commands:
            for attempt in (1, 2):
                try:
                    status, out, err = self._run_once(command, input, timeout, label)
                    return status, out.decode(errors="replace"), err.decode(errors="replace")
                except (_CommandTimeout, ShellTimeout):
                    raise TransportError(
                        f"command timed out after {timeout} s on {self.host}: {label} (the "
                        "remote process may still be running)") from None
                except _Dropped as e:
                    if not idempotent or attempt == 2:
                        raise TransportError(
                            f"{e} while running {label!r}; it may or may not have run there, "
                            "so it is not run again (check its effect before retrying)") from e
                    log.warning("%s while running %r; running it again", e, label)
        raise AssertionError("unreachable")

    def _run_once(self, command: str, input: str | None, timeout: float | None,
                  label: str) -> tuple[int, bytes, bytes]:
        shell = self._take_shell()
        if shell is not None:
            try:
                result = shell.run(command, input, timeout)
            except (ShellEnded, paramiko.SSHException, OSError, EOFError) as e:
                if shell.owner.alive():
                    raise _Dropped(f"the remote shell on {self.host} ended ({e})") from e
                self._discard(shell.owner)
                raise _Dropped(f"the SSH connection to {self.host} dropped") from e
            with self._shell_lock:
                self._idle_shells.append(shell)
            return result
        conn, chan = self._open_channel()
        try:
            chan.exec_command(command)
            return self._collect(conn, chan, input, timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            if conn.alive():
                raise TransportError(f"running {label!r} on {self.host} failed: {e}") from e
            self._discard(conn)
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
                if not shell.broken and not shell.chan.closed and shell.owner is self._conn \
                        and shell.owner.alive():
                    return shell
                shell.close()
        for attempt in (1, 2):
            conn, chan = self._open_channel()
            try:
                return RemoteShell.start(chan, conn, SHELL_START_TIMEOUT)
            except ShellTimeout:
                raise TransportError(
                    f"the login shell on {self.host} did not start within "
                    f"{SHELL_START_TIMEOUT:g} s: do its start-up files (~/.bashrc, ~/.profile) "
                    "wait for something?") from None
            except (ShellEnded, paramiko.SSHException, OSError, EOFError) as e:
                if conn.alive():
                    log.warning("%s does not keep a shell open (%s): each command opens a "
                                "session of its own", self.host, e)
                    self.persistent_shell = False
                    return None
                self._discard(conn)
                if attempt == 2:
                    raise TransportError(f"cannot start a shell on {self.host}: the connection "
                                         f"dropped ({e})") from e
        raise AssertionError("unreachable")

    @staticmethod
    def _collect(conn: _Connection, chan: paramiko.Channel, input: str | None,
                 timeout: float | None) -> tuple[int, bytes, bytes]:
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

    def _argv(self, argv: Sequence[str]) -> list[str]:
        argv = [os.fspath(a) for a in argv]
        if not argv:
            raise ValueError("empty command")
        argv[0] = self.expand_path(argv[0])
        return argv

    @staticmethod
    def _guard(argv: list[str]) -> str:
        """A shell line that makes a missing program recognisable (exit 127 and a mark)."""
        prog = shlex.quote(argv[0])
        mark = shlex.quote(NOT_FOUND_MARK + argv[0])
        return f"command -v {prog} >/dev/null 2>&1 || {{ echo {mark} >&2; exit 127; }}\n"

    def run(self, argv: Sequence[str], *, input: str | None = None,
            timeout: float | None = 60.0, idempotent: bool = False) -> CommandResult:
        """Run ``argv`` in the remote login shell (quoted with :func:`shlex.join`).
        ``idempotent=True`` allows running it again when the connection drops while it runs;
        otherwise that raises :class:`TransportError`. A leading ``~`` in ``argv[0]`` is the
        remote home."""
        args = self._argv(argv)
        command = shlex.join(args)
        status, out, err = self._execute(self._guard(args) + command, input=input,
                                         timeout=timeout, idempotent=idempotent, label=command)
        if status == 127 and NOT_FOUND_MARK in err:
            raise TransportError(f"command not found on {self.host}: {args[0]} (is it installed "
                                 "there and on the PATH of a non-interactive SSH login?)")
        return CommandResult(tuple(args), status, out, err)

    def which(self, command: str) -> str | None:
        status, out, _ = self._execute(f"command -v {shlex.quote(command)}", idempotent=True)
        path = out.strip().splitlines()[0] if status == 0 and out.strip() else ""
        return path or None

    def spawn_detached(self, argv: Sequence[str], *, cwd: str, stdout: str, stderr: str,
                       env: Mapping[str, str] | None = None) -> int:
        args = self._argv(argv)
        out, err = self.expand_path(stdout), self.expand_path(stderr)
        for name in env or {}:
            if not _ENV_NAME.match(name):
                raise ValueError(f"invalid environment variable name {name!r}")
        assign = "".join(f"{k}={shlex.quote(v)} " for k, v in (env or {}).items())
        redirect = (f">>{shlex.quote(out)} 2>&1" if err == out
                    else f">>{shlex.quote(out)} 2>>{shlex.quote(err)}")
        # setsid in a non-interactive shell's background job execs in place (the job is no
        # group leader), so $! becomes the session and process group leader itself. Answer
        # once it has, so that the group can be signalled at once.
        start = (f"cd {shlex.quote(self.expand_path(cwd))} || exit 1\n{self._guard(args)}"
                 f"{assign}setsid {shlex.join(args)} </dev/null {redirect} &\n"
                 f"{_WAIT_FOR_SESSION}\necho $pid")
        status, text, errors = self._execute(start, idempotent=False,
                                             label=f"start {shlex.join(args)}")
        if status != 0 or not text.strip().isdigit():
            raise TransportError(f"could not start {args[0]} in {cwd} on {self.host}: "
                                 f"{errors.replace(NOT_FOUND_MARK, 'command not found: ').strip()}"
                                 f" (exit status {status})")
        return int(text.strip())

    def signal_group(self, pid: int, signum: int) -> bool:
        status, _, err = self._execute(f"kill -{int(signum)} -{int(pid)}", idempotent=False)
        if status == 0:
            return True
        if "No such process" in err:
            return False
        raise TransportError(f"could not signal process group {pid} on {self.host}: "
                             f"{err.strip()}")

    def cpu_count(self) -> int:
        status, out, err = self._execute("nproc 2>/dev/null || getconf _NPROCESSORS_ONLN",
                                         idempotent=True)
        try:
            return int(out.strip())
        except ValueError:
            raise TransportError(f"cannot count the CPUs of {self.host}: nproc printed "
                                 f"{out.strip()!r} {err.strip()!r}") from None

    def remove_tree(self, path: str) -> None:
        p = self.expand_path(path)
        if posixpath.normpath(p) in ("/", ".", posixpath.normpath(self._remote_home())):
            raise TransportError(f"refusing to remove {path!r} on {self.host}")
        status, _, err = self._execute(f"rm -rf -- {shlex.quote(p)}", idempotent=True)
        if status != 0:
            raise TransportError(f"could not remove {p} on {self.host}: {err.strip()}")

    # -- files ------------------------------------------------------------------------

    def expand_path(self, path: str | os.PathLike) -> str:
        """``path`` with a leading ``~`` replaced by the remote home directory."""
        path = os.fspath(path)
        if path == "~":
            return self._remote_home()
        if path.startswith("~/"):
            return posixpath.join(self._remote_home(), path[2:])
        if path.startswith("~"):
            raise TransportError(f"cannot expand {path!r}: only ~ and ~/... (the remote home) "
                                 "are understood; give the full path")
        return path

    def _remote_home(self) -> str:
        if self._home is None:
            self._home = self._sftp("find the home directory", ".",
                                    lambda s: s.normalize("."), idempotent=True)
        return self._home

    def _sftp(self, what: str, path: str, op: Callable[[paramiko.SFTPClient], T], *,
              idempotent: bool) -> T:
        """Run ``op`` on the SFTP session, reconnecting as the module docstring says."""
        for attempt in (1, 2):
            conn = self._connection()
            with self._sftp_lock:
                try:
                    sftp = conn.sftp_session()
                except (paramiko.SSHException, OSError, EOFError) as e:
                    if conn.alive():
                        raise TransportError(f"cannot start SFTP on {self.host}: {e} (is the "
                                             "sftp Subsystem enabled in its sshd_config?)") from e
                    self._discard(conn)
                    if attempt == 2:
                        raise TransportError(f"cannot start SFTP on {self.host}: {e}") from e
                    continue
                try:
                    return op(sftp)
                except Exception as e:
                    if isinstance(e, TimeoutError):
                        conn.drop_sftp()
                        raise TransportError(f"{what} {path} on {self.host}: no answer within "
                                             f"{SFTP_TIMEOUT:g} s") from e
                    if conn.sftp_alive():
                        mapped = self._remote_error(e, what, path)
                        if mapped is e:
                            raise
                        raise mapped from e
                    conn.drop_sftp()
                    if not conn.alive():
                        self._discard(conn)
                    if not idempotent or attempt == 2:
                        raise TransportError(
                            f"the SSH connection to {self.host} dropped during {what} {path}; it "
                            "may or may not have happened there") from e
                    log.warning("the SSH connection to %s dropped during %s %s (%s); connecting "
                                "again and repeating it", self.host, what, path, e)
        raise AssertionError("unreachable")

    def _remote_error(self, e: Exception, what: str, path: str) -> Exception:
        if isinstance(e, OSError) and e.errno is not None:
            return OSError(e.errno, f"{e.strerror or os.strerror(e.errno)} ({what} on "
                           f"{self.host})", path)
        if isinstance(e, (OSError, paramiko.SSHException, EOFError)):
            return TransportError(f"{what} {path} on {self.host} failed: {e}")
        return e

    def read_bytes(self, path: str) -> bytes:
        data = self.read_files([path])[path]
        if data is None:
            p = self.expand_path(path)
            raise FileNotFoundError(errno.ENOENT, f"No such file (read on {self.host})", p)
        return data

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes | None]:
        """Many files in two round trips (see :mod:`.sftpbatch`); None for a missing one."""
        if not paths:
            return {}
        full = {path: self.expand_path(path) for path in paths}
        got = self._sftp("read", next(iter(full.values())) if len(full) == 1 else
                         f"{len(full)} files such as {next(iter(full.values()))}",
                         lambda sftp: read_files(sftp, list(dict.fromkeys(full.values()))),
                         idempotent=True)
        return {path: got[p] for path, p in full.items()}

    def read_tail(self, path: str, max_bytes: int) -> str:
        p = self.expand_path(path)

        def op(sftp: paramiko.SFTPClient) -> str:
            try:
                f = sftp.open(p, "rb")
            except FileNotFoundError:
                return ""
            with f:
                f.seek(max(0, f.stat().st_size - max_bytes))
                return f.read().decode(errors="replace")

        return self._sftp("read the end of", p, op, idempotent=True)

    def process_stat(self, pid: int) -> str | None:
        p = f"/proc/{int(pid)}/stat"

        def op(sftp: paramiko.SFTPClient) -> str | None:
            try:
                with sftp.open(p, "rb") as f:
                    return f.read().decode(errors="replace")
            except OSError:
                if not self._answered(sftp):
                    raise
                return None

        return self._sftp("read", p, op, idempotent=True)

    @staticmethod
    def _answered(sftp: paramiko.SFTPClient) -> bool:
        """An error came from the server (its SFTP session is still up), not the connection."""
        chan = sftp.get_channel()
        return not chan.closed and chan.get_transport().is_active()

    def write_bytes(self, path: str, data: bytes, *, atomic: bool = True) -> None:
        p = self.expand_path(path)

        def put(sftp: paramiko.SFTPClient, name: str) -> None:
            with sftp.open(name, "wb") as f:
                f.set_pipelined(True)
                f.write(data)

        def op(sftp: paramiko.SFTPClient) -> None:
            if not atomic:
                return put(sftp, p)
            head, name = posixpath.split(p)
            tmp = posixpath.join(head, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
            try:
                put(sftp, tmp)
                sftp.posix_rename(tmp, p)
            except BaseException:
                try:
                    sftp.remove(tmp)
                except Exception:
                    pass
                raise

        # Writing the whole file again after a drop leaves the same file: safe to repeat.
        self._sftp("write", p, op, idempotent=True)

    def exists(self, path: str) -> bool:
        p = self.expand_path(path)

        def op(sftp: paramiko.SFTPClient) -> bool:
            try:
                sftp.stat(p)
                return True
            except OSError:
                if not self._answered(sftp):
                    raise
                return False  # as os.path.exists: whatever cannot be stat'ed does not exist

        return self._sftp("stat", p, op, idempotent=True)

    def create_exclusive(self, path: str, data: bytes = b"") -> bool:
        p = self.expand_path(path)

        def op(sftp: paramiko.SFTPClient) -> bool:
            try:
                f = sftp.open(p, "wx")
            except OSError as e:
                # SFTP v3 has no "already exists" status: OpenSSH answers a plain failure.
                if e.errno is None and self._answered(sftp) and _stat_or_none(sftp, p):
                    return False
                raise
            with f:
                if data:
                    f.write(data)
            return True

        return self._sftp("create", p, op, idempotent=False)

    def list_dir(self, path: str) -> list[str]:
        p = self.expand_path(path)

        def op(sftp: paramiko.SFTPClient) -> list[str]:
            try:
                return sftp.listdir(p)
            except FileNotFoundError:
                return []

        return self._sftp("list", p, op, idempotent=True)

    def make_dir(self, path: str) -> None:
        p = posixpath.normpath(self.expand_path(path))

        def make(sftp: paramiko.SFTPClient, d: str) -> None:
            try:
                sftp.mkdir(d, 0o700)
                return
            except FileNotFoundError:
                parent = posixpath.dirname(d)
                if parent == d:
                    raise
                make(sftp, parent)
            except OSError:
                if not self._answered(sftp):
                    raise
                attrs = _stat_or_none(sftp, d)
                if attrs is None:
                    raise
                if not _is_dir(attrs):
                    raise FileExistsError(errno.EEXIST, "exists and is not a directory",
                                          d) from None
                return
            try:
                sftp.mkdir(d, 0o700)
            except OSError:
                attrs = _stat_or_none(sftp, d) if self._answered(sftp) else None
                if attrs is None or not _is_dir(attrs):
                    raise

        self._sftp("make directory", p, lambda sftp: make(sftp, p), idempotent=True)

    def stat_path(self, path: str) -> PathStat:
        p = self.expand_path(path)

        def op(sftp: paramiko.SFTPClient) -> PathStat:
            attrs = sftp.lstat(p)  # one round trip for a path that is no link
            link = attrs.st_mode is not None and stat.S_ISLNK(attrs.st_mode)
            target = p
            if link:
                target, attrs = sftp.normalize(p), sftp.stat(p)  # realpath(3) on the server
            if attrs.st_uid is None or attrs.st_mode is None:
                raise TransportError(f"the SFTP server of {self.host} gives no owner or mode "
                                     f"for {p}")
            return PathStat(attrs.st_uid, attrs.st_mode, link, target)

        return self._sftp("stat", p, op, idempotent=True)

    def user_id(self) -> int:
        if self._uid is None:
            status, out, err = self._execute("id -u", idempotent=True)
            if status != 0 or not out.strip().isdigit():
                raise TransportError(f"`id -u` failed on {self.host} (exit status {status}): "
                                     f"{(err or out).strip()}")
            self._uid = int(out.strip())
        return self._uid

    def chmod(self, path: str, mode: int) -> None:
        p = self.expand_path(path)
        self._sftp("chmod", p, lambda sftp: sftp.chmod(p, mode), idempotent=True)

    def rename(self, src: str, dst: str) -> None:
        s, d = self.expand_path(src), self.expand_path(dst)
        self._sftp("rename", f"{s} to {d}", lambda sftp: sftp.posix_rename(s, d),
                   idempotent=False)

    def symlink(self, target: str, link: str) -> None:
        t, l = self.expand_path(target), self.expand_path(link)
        self._sftp("symlink", f"{l} -> {t}", lambda sftp: sftp.symlink(t, l), idempotent=False)


def _stat_or_none(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPAttributes | None:
    try:
        return sftp.stat(path)
    except OSError:
        return None


def _is_dir(attrs: paramiko.SFTPAttributes) -> bool:
    return attrs.st_mode is not None and stat.S_ISDIR(attrs.st_mode)


def _encrypted(path: str) -> bool:
    try:
        paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        return True
    except Exception:
        return False
    return False
