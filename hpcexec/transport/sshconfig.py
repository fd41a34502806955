"""Where an SSH destination leads (``~/.ssh/config``) and whether its host key is trusted.

Used by :mod:`hpcexec.transport.sshconnect` (logging in); kept apart so that the transport
modules only move commands and files.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from ..errors import HostKeyError, TransportError

log = logging.getLogger(__name__)

DEFAULT_SSH_CONFIG = "~/.ssh/config"
USER_KNOWN_HOSTS = ("~/.ssh/known_hosts",)
# Read (never written) when present, as OpenSSH does.
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
MAX_JUMPS = 8

_DESTINATION = re.compile(
    r"^(?:(?P<user>[^@]+)@)?(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:@\[\]]+))"
    r"(?::(?P<port>\d+))?$"
)


@dataclass(frozen=True)
class Endpoint:
    """One SSH server to log in to, as ``~/.ssh/config`` resolves it."""

    alias: str  # the name looked up in the config
    hostname: str  # where to connect (HostName)
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    proxy_command: str | None = None
    jumps: tuple[Endpoint, ...] = ()  # ProxyJump hops, first hop first
    known_hosts_files: tuple[str, ...] = USER_KNOWN_HOSTS
    connect_timeout: float | None = None
    keepalive: int | None = None

    @property
    def known_hosts_name(self) -> str:
        """The name of this server in a known_hosts file."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


def parse_destination(text: str) -> tuple[str | None, str, int | None]:
    """``user@host:port`` (user and port optional, ``[v6]`` in brackets) -> its parts."""
    text = text.strip()
    if text.startswith("ssh://"):
        text = text[len("ssh://") :].rstrip("/")
    m = _DESTINATION.match(text)
    if not m:
        raise TransportError(
            f"cannot read SSH destination {text!r}: give an alias from "
            "~/.ssh/config or user@host[:port]"
        )
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 0 < port < 65536:
        raise TransportError(f"SSH destination {text!r} has an invalid port {port}")
    return m["user"], m["v6"] or m["host"], port


def load_config(path: str | os.PathLike[str] | None) -> paramiko.SSHConfig:
    """The parsed ssh config at ``path`` (default ``~/.ssh/config``); empty if it is missing."""
    p = Path(os.path.expanduser(str(path if path is not None else DEFAULT_SSH_CONFIG)))
    if not p.exists():
        if path is not None:
            raise TransportError(f"ssh_config={str(path)!r} does not exist")
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(p))
    except (OSError, paramiko.ConfigParseError, ValueError) as e:
        raise TransportError(
            f"cannot read the ssh config {p}: {e}; fix the file or pass ssh_config= another one"
        ) from e


def resolve(
    destination: str, config: paramiko.SSHConfig, *, ssh_key: str | None = None, _depth: int = 0
) -> Endpoint:
    """Resolve an alias or ``user@host[:port]`` with the config: HostName, User, Port,
    IdentityFile, IdentitiesOnly, ProxyJump, ProxyCommand, UserKnownHostsFile,
    ConnectTimeout, ServerAliveInterval. Explicit user and port win over the config."""
    user, name, port = parse_destination(destination)
    try:
        opts = _HostOptions(name, config.lookup(name))
    except Exception as e:  # Match exec and the like raise whatever they raise
        raise TransportError(f"cannot apply the ssh config to {name!r}: {e}") from e
    port = port or opts.port()
    user = user or opts.text("user") or getpass.getuser()
    identities = _identities(opts, ssh_key)
    jumps = _jumps(name, opts.text("proxyjump"), config, _depth)
    known = tuple(shlex.split(opts.text("userknownhostsfile") or "")) or USER_KNOWN_HOSTS
    return Endpoint(
        alias=name,
        hostname=opts.raw.get("hostname", name),
        port=port,
        user=user,
        identity_files=identities,
        identities_only=str(opts.raw.get("identitiesonly", "no")).lower() == "yes",
        proxy_command=None if jumps else opts.text("proxycommand"),
        jumps=jumps,
        known_hosts_files=tuple(os.path.expanduser(f) for f in known),
        connect_timeout=opts.number("connecttimeout"),
        keepalive=opts.number("serveraliveinterval"),
    )


@dataclass(frozen=True)
class _HostOptions:
    """What the ssh config says for one host (paramiko's lookup), read as OpenSSH reads it."""

    name: str
    raw: paramiko.SSHConfigDict

    def text(self, key: str) -> str | None:
        """The value, or None where it is unset or ``none``."""
        value = self.raw.get(key)
        return None if value is None or str(value).lower() == "none" else str(value)

    def number(self, key: str) -> int | None:
        """A whole-number value; one that is not a number is logged and ignored."""
        value = self.text(key)
        try:
            return int(value) if value else None
        except ValueError:
            log.warning(
                "ignoring %s=%r for %s in the ssh config: not a number", key, value, self.name
            )
            return None

    def port(self) -> int:
        try:
            return int(self.raw.get("port", 22))
        except ValueError as e:
            raise TransportError(
                f"the ssh config gives {self.name!r} a bad Port: {self.raw.get('port')!r}"
            ) from e


def _identities(opts: _HostOptions, ssh_key: str | None) -> tuple[str, ...]:
    """The key files to offer: ``ssh_key`` alone if given, else the configured ones."""
    if ssh_key is not None:
        key = os.path.expanduser(str(ssh_key))
        if not os.path.isfile(key):
            raise TransportError(
                f"ssh_key={str(ssh_key)!r} does not exist (give the path of a private key file)"
            )
        return (key,)
    # OpenSSH skips configured identity files that do not exist.
    return tuple(
        os.path.expanduser(f)
        for f in opts.raw.get("identityfile", [])
        if os.path.isfile(os.path.expanduser(f))
    )


def _jumps(
    name: str, jump_spec: str | None, config: paramiko.SSHConfig, depth: int
) -> tuple[Endpoint, ...]:
    """The hosts of a ProxyJump list, each preceded by its own jumps, in connection order."""
    if not jump_spec:
        return ()
    if depth >= MAX_JUMPS:
        raise TransportError(
            f"ProxyJump for {name!r} nests more than {MAX_JUMPS} deep; "
            "is there a loop in the ssh config?"
        )
    hops: list[Endpoint] = []
    for hop in jump_spec.split(","):
        ep = resolve(hop.strip(), config, _depth=depth + 1)
        hops.extend(ep.jumps)
        hops.append(ep)
    return tuple(hops)


@dataclass
class HostKeyPolicy(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]  # paramiko: no hints
    """Refuse unknown host keys with a message that says how to add them, or, with
    ``trust_on_first_use``, add them to ``save_to``. Changed keys are refused by
    :class:`paramiko.SSHClient` itself (see :func:`changed_key_error`)."""

    endpoint: Endpoint
    files: list[str] = field(default_factory=list)
    save_to: str = ""
    trust_on_first_use: bool = False

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if not self.trust_on_first_use:
            raise HostKeyError(
                f"the host key of {self.endpoint.known_hosts_name} ({key.get_name()} "
                f"{key.fingerprint}) is not in {_names(self.files)}, so hpcexec will not log in. "
                f"Check that fingerprint with the host's administrators, then add the key:\n"
                f"    {_keyscan(self.endpoint)} >> {_tilde(self.save_to)}\n"
                "(ssh-keyscan ... | ssh-keygen -lf - prints its fingerprints), or pass "
                "trust_on_first_use=True to accept and save it on this first connection."
            )
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        path = Path(self.save_to)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(line)
        except OSError as e:
            raise HostKeyError(f"cannot save the host key of {hostname} to {path}: {e}") from e
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning(
            "trusting the host key of %s on first use (%s %s); saved to %s",
            hostname,
            key.get_name(),
            key.fingerprint,
            path,
        )


def known_hosts(endpoint: Endpoint, extra: str | os.PathLike[str] | None) -> tuple[list[str], str]:
    """The known-hosts files to read (those that exist) and the one to save new keys to."""
    candidates = [*GLOBAL_KNOWN_HOSTS, *endpoint.known_hosts_files]
    if extra is not None:
        candidates.append(os.path.expanduser(str(extra)))
    files = list(dict.fromkeys(f for f in candidates if os.path.isfile(f)))
    save_to = os.path.expanduser(str(extra)) if extra is not None else endpoint.known_hosts_files[0]
    return files, save_to


def changed_key_error(
    endpoint: Endpoint, files: list[str], got: paramiko.PKey, expected: paramiko.PKey
) -> HostKeyError:
    """The refusal of a host key that differs from the known one."""
    name = endpoint.known_hosts_name
    holders = [f for f in files if _holds(f, name)] or files
    where = holders[0] if holders else "~/.ssh/known_hosts"
    return HostKeyError(
        f"the host key of {name} has CHANGED: the server presents {got.get_name()} "
        f"{got.fingerprint}, but {_tilde(where)} records {expected.get_name()} "
        f"{expected.fingerprint}. Someone may be intercepting the connection, or the host was "
        "reinstalled; hpcexec will not log in (trust_on_first_use never accepts a changed key). "
        "If the administrators confirm the new key, replace the old one:\n"
        f"    ssh-keygen -R {shlex.quote(name)} -f {_tilde(where)}\n"
        f"    {_keyscan(endpoint)} >> {_tilde(where)}"
    )


def _holds(path: str, name: str) -> bool:
    try:
        return paramiko.HostKeys(path).lookup(name) is not None
    except (OSError, paramiko.SSHException):
        return False


def _keyscan(endpoint: Endpoint) -> str:
    port = f"-p {endpoint.port} " if endpoint.port != 22 else ""
    return f"ssh-keyscan {port}{shlex.quote(endpoint.hostname)}"


def _tilde(path: str) -> str:
    home = os.path.expanduser("~")
    return "~" + path[len(home) :] if path.startswith(home + os.sep) else shlex.quote(path)


def _names(files: list[str]) -> str:
    return " or ".join(_tilde(f) for f in files) if files else "any known_hosts file"
