"""Logging in to an SSH destination, through its jump hosts, with its host keys checked."""

from __future__ import annotations

import logging
import shlex
import threading
import time
from dataclasses import dataclass

import paramiko

from ..errors import HostKeyError, TransportError
from .sshconfig import Endpoint, HostKeyPolicy, changed_key_error, known_hosts

log = logging.getLogger(__name__)
# paramiko logs a failed connection's traceback from its own thread; the TransportError we
# raise says what went wrong, so keep Python's last-resort handler from printing it too.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

# A stalled SFTP request fails after this long (a hung remote filesystem, a dead network).
SFTP_TIMEOUT = 120.0
# SFTP sessions open at once on a connection: one per thread that uses files at the same
# time (the caller, the submitting thread, the monitor); sshd allows 10 sessions in all.
SFTP_SESSIONS = 3


class Connection:
    """One logged-in SSH connection (and the jump-host connections it runs through), with
    its SFTP sessions: up to :data:`SFTP_SESSIONS`, each used by one thread at a time, so a
    thread staging a batch does not hold back another reading results (each session is a
    channel of this one connection)."""

    def __init__(self, client: paramiko.SSHClient, hops: list[paramiko.SSHClient]) -> None:
        self.client = client
        self.hops = hops
        self._idle: list[paramiko.SFTPClient] = []  # open sessions no thread is using
        self._open = 0  # sessions open, idle or in use
        self._sessions = threading.Condition()

    @property
    def transport(self) -> paramiko.Transport:
        t = self.client.get_transport()
        if t is None:
            raise paramiko.SSHException("SSH session not active")
        return t

    def alive(self) -> bool:
        t = self.client.get_transport()
        return t is not None and t.is_active()

    def take_sftp(self) -> paramiko.SFTPClient:
        """An SFTP session for the calling thread alone until :meth:`give_sftp`: an idle one,
        else a new one while fewer than :data:`SFTP_SESSIONS` are open, else the next one
        given back. Raises what opening one raises."""
        with self._sessions:
            while True:
                while self._idle:
                    sftp = self._idle.pop()
                    if sftp_answers(sftp):
                        return sftp
                    self._close(sftp)
                if self._open < SFTP_SESSIONS:
                    self._open += 1
                    break
                self._sessions.wait()
        try:
            sftp = self.client.open_sftp()
        except BaseException:
            self._forget()
            raise
        sftp.get_channel().settimeout(SFTP_TIMEOUT)
        return sftp

    def give_sftp(self, sftp: paramiko.SFTPClient, *, broken: bool = False) -> None:
        """Hand back a session from :meth:`take_sftp`; a ``broken`` one is closed."""
        if broken or not sftp_answers(sftp):
            with self._sessions:
                self._close(sftp)
            return
        with self._sessions:
            self._idle.append(sftp)
            self._sessions.notify()

    def _forget(self) -> None:
        with self._sessions:
            self._open -= 1
            self._sessions.notify()

    def _close(self, sftp: paramiko.SFTPClient) -> None:
        """Close a session (holding ``_sessions``)."""
        self._open -= 1
        self._sessions.notify()
        try:
            sftp.close()
        except Exception:  # closing what is already broken  # noqa: BLE001
            pass

    def close(self) -> None:
        with self._sessions:
            for sftp in self._idle:
                self._close(sftp)
            self._idle = []
        for c in [self.client, *reversed(self.hops)]:
            try:
                c.close()
            except Exception:  # closing what is already broken  # noqa: BLE001
                pass


def sftp_answers(sftp: paramiko.SFTPClient) -> bool:
    """The session is up: an error it gave came from the server, not from a dropped link."""
    chan = sftp.get_channel()
    return not chan.closed and chan.get_transport().is_active()


@dataclass(frozen=True)
class Login:
    """How to reach ``endpoint`` (named ``host`` in messages) and which host keys to trust."""

    host: str
    endpoint: Endpoint
    known_hosts: str | None
    trust_on_first_use: bool
    connect_timeout: float
    keepalive: int

    def open(self) -> Connection:
        """A new connection, through every jump host; raises TransportError or HostKeyError."""
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
                        raise TransportError(
                            f"cannot start the ProxyCommand for {ep.alias!r} "
                            f"({ep.proxy_command}): {e}"
                        ) from e
                client = self._login(ep, sock, via=chain[i - 1] if i else None)
                opened.append(client)
                client.get_transport().set_keepalive(self.keepalive)
                sock = None
                if i + 1 < len(chain):
                    sock = self._forward(client, ep, chain[i + 1])
        except BaseException:
            for c in reversed(opened):
                c.close()
            raise
        log.info("connected to %s (%s) in %.2f s", self.host, self.endpoint, time.monotonic() - t0)
        return Connection(opened[-1], opened[:-1])

    def _forward(self, client: paramiko.SSHClient, ep: Endpoint, nxt: Endpoint) -> paramiko.Channel:
        """A channel from jump host ``ep`` to the next hop ``nxt``."""
        try:
            return client.get_transport().open_channel(
                "direct-tcpip",
                (nxt.hostname, nxt.port),
                ("127.0.0.1", 0),
                timeout=self.connect_timeout,
            )
        except (paramiko.SSHException, OSError) as e:
            raise TransportError(
                f"jump host {ep} could not open a connection to "
                f"{nxt.hostname}:{nxt.port} for {self.host!r}: {e} (is the address "
                "right, and TCP forwarding allowed on the jump host?)"
            ) from e

    def _login(self, ep: Endpoint, sock: object, via: Endpoint | None) -> paramiko.SSHClient:
        files, save_to = known_hosts(ep, self.known_hosts)
        client = paramiko.SSHClient()
        try:
            for f in files:
                client.load_system_host_keys(f)
        except (OSError, paramiko.SSHException) as e:
            raise TransportError(f"cannot read the known-hosts file: {e}") from e
        client.set_missing_host_key_policy(
            HostKeyPolicy(ep, files, save_to, self.trust_on_first_use)
        )
        how = f"{ep} (for {self.host!r}" + (f", through {via})" if via else ")")
        ct = self.connect_timeout
        try:
            client.connect(
                ep.hostname,
                ep.port,
                username=ep.user,
                key_filename=list(ep.identity_files) or None,
                allow_agent=not ep.identities_only,
                look_for_keys=not ep.identity_files,
                timeout=ct,
                banner_timeout=ct,
                auth_timeout=ct,
                channel_timeout=ct,
                sock=sock,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as e:
            client.close()
            raise changed_key_error(ep, files, e.key, e.expected_key) from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            t = client.get_transport()
            refused = isinstance(e, paramiko.AuthenticationException) or (
                t is not None and t.is_active() and not t.is_authenticated()
            )
            client.close()
            if refused:  # the server answered, but took none of our keys
                raise TransportError(_auth_failure(ep, how, e)) from None
            raise TransportError(
                f"cannot connect to {how}: {e or type(e).__name__}. Is the host up, sshd "
                f"listening on port {ep.port}, and the name right? ({ct:g} s timeout)"
            ) from e
        return client


def _auth_failure(ep: Endpoint, how: str, e: Exception) -> str:
    locked = [f for f in ep.identity_files if _encrypted(f)]
    tried = (
        ", ".join(ep.identity_files) if ep.identity_files else "~/.ssh/id_rsa, id_ecdsa, id_ed25519"
    )
    text = (
        f"SSH login to {how} failed ({type(e).__name__}): tried {tried}"
        f"{'' if ep.identities_only else ' and the ssh-agent keys'}. Pass ssh_key=, add "
        f"an IdentityFile line for {ep.alias} to ~/.ssh/config, or load the key into "
        "ssh-agent (ssh-add KEY); check that its public half is in the remote "
        "~/.ssh/authorized_keys."
    )
    if locked:
        text += (
            f" {', '.join(locked)} is protected by a passphrase: hpcexec never asks "
            "for passphrases, load it with `ssh-add " + shlex.quote(locked[0]) + "`."
        )
    return text


def _encrypted(path: str) -> bool:
    try:
        paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        return True
    except Exception:  # not a readable encrypted key: ask no passphrase  # noqa: BLE001
        return False
    return False
