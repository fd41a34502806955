"""Files on the remote host through the connection's SFTP session: each operation, its
errors mapped to local ones, and repeated after a drop only where that is safe."""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import stat
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import paramiko

from ..errors import TransportError
from ..trust import PathStat
from .sftpbatch import list_dirs, lstat_all, make_dirs, read_files, renames, write_files
from .sshconnect import SFTP_TIMEOUT, sftp_answers
from .sshlink import Link

log = logging.getLogger(__name__)

T = TypeVar("T")


class SFTPFiles:
    """The file operations of :class:`~hpcexec.transport.ssh.SSHTransport` on ``link``."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.host = link.login.host
        self._home: str | None = None

    def expand_path(self, path: str | os.PathLike[str]) -> str:
        """``path`` with a leading ``~`` replaced by the remote home directory."""
        path = os.fspath(path)
        if path == "~":
            return self.home()
        if path.startswith("~/"):
            return posixpath.join(self.home(), path[2:])
        if path.startswith("~"):
            raise TransportError(
                f"cannot expand {path!r}: only ~ and ~/... (the remote home) "
                "are understood; give the full path"
            )
        return path

    def home(self) -> str:
        """The remote home directory (asked once)."""
        if self._home is None:
            self._home = self._call(
                "find the home directory", ".", lambda s: s.normalize("."), idempotent=True
            )
        return self._home

    def _call(
        self, what: str, path: str, op: Callable[[paramiko.SFTPClient], T], *, idempotent: bool
    ) -> T:
        """Run ``op`` on an SFTP session of the connection's (this thread's until it returns);
        after a drop, run it again on a new connection when ``idempotent``, else raise
        TransportError."""
        for attempt in (1, 2):
            conn = self.link.connection()
            try:
                sftp = conn.take_sftp()
            except (paramiko.SSHException, OSError, EOFError) as e:
                if conn.alive():
                    raise TransportError(
                        f"cannot start SFTP on {self.host}: {e} (is the "
                        "sftp Subsystem enabled in its sshd_config?)"
                    ) from e
                self.link.discard(conn)
                if attempt == 2:
                    raise TransportError(f"cannot start SFTP on {self.host}: {e}") from e
                continue
            broken = False
            try:
                return op(sftp)
            except Exception as e:
                if isinstance(e, TimeoutError):
                    broken = True
                    raise TransportError(
                        f"{what} {path} on {self.host}: no answer within {SFTP_TIMEOUT:g} s"
                    ) from e
                if sftp_answers(sftp):
                    mapped = self._remote_error(e, what, path)
                    if mapped is e:
                        raise
                    raise mapped from e
                broken = True
                if not conn.alive():
                    self.link.discard(conn)
                if not idempotent or attempt == 2:
                    raise TransportError(
                        f"the SSH connection to {self.host} dropped during {what} {path}; it "
                        "may or may not have happened there"
                    ) from e
                log.warning(
                    "the SSH connection to %s dropped during %s %s (%s); connecting "
                    "again and repeating it",
                    self.host,
                    what,
                    path,
                    e,
                )
            finally:
                conn.give_sftp(sftp, broken=broken)
        raise AssertionError("unreachable")

    def _remote_error(self, e: Exception, what: str, path: str) -> Exception:
        if isinstance(e, OSError) and e.errno is not None:
            return OSError(
                e.errno, f"{e.strerror or os.strerror(e.errno)} ({what} on {self.host})", path
            )
        if isinstance(e, (OSError, paramiko.SSHException, EOFError)):
            return TransportError(f"{what} {path} on {self.host} failed: {e}")
        return e

    def read_bytes(self, path: str) -> bytes:
        return self._found(self.read_files([path]), path, "read")

    def _found(self, got: Mapping[str, T | None], path: str, what: str) -> T:
        """``path``'s entry of a batch's answers; FileNotFoundError where it is None."""
        found = got[path]
        if found is None:
            p = self.expand_path(path)
            raise FileNotFoundError(errno.ENOENT, f"No such file ({what} on {self.host})", p)
        return found

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes | None]:
        """Many files in two round trips (see :mod:`.sftpbatch`); None for a missing one."""
        if not paths:
            return {}
        full = {path: self.expand_path(path) for path in paths}
        got = self._call(
            "read",
            next(iter(full.values()))
            if len(full) == 1
            else f"{len(full)} files such as {next(iter(full.values()))}",
            lambda sftp: read_files(sftp, list(dict.fromkeys(full.values()))),
            idempotent=True,
        )
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
                return str(f.read().decode(errors="replace"))

        return self._call("read the end of", p, op, idempotent=True)

    def process_stat(self, pid: int) -> str | None:
        p = f"/proc/{int(pid)}/stat"

        def op(sftp: paramiko.SFTPClient) -> str | None:
            try:
                with sftp.open(p, "rb") as f:
                    return str(f.read().decode(errors="replace"))
            except OSError:
                if not sftp_answers(sftp):
                    raise
                return None

        return self._call("read", p, op, idempotent=True)

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
                except Exception:  # cleaning up; the first error is raised  # noqa: BLE001
                    pass
                raise

        # Writing the whole file again after a drop leaves the same file: safe to repeat.
        self._call("write", p, op, idempotent=True)

    def stage(
        self, dirs: Sequence[str], files: Mapping[str, bytes], links: Mapping[str, str]
    ) -> None:
        """See :meth:`Transport.stage`: directories, then files and links, pipelined."""
        if not (dirs or files or links):
            return
        ds = [posixpath.normpath(self.expand_path(d)) for d in dirs]
        fs = {self.expand_path(p): data for p, data in files.items()}
        ls = {self.expand_path(lk): self.expand_path(t) for lk, t in links.items()}

        def op(sftp: paramiko.SFTPClient) -> None:
            for d in make_dirs(sftp, ds):  # there already, or a parent missing: one by one
                attrs = _stat_or_none(sftp, d)
                if attrs is None or not _is_dir(attrs):
                    _make_dirs(sftp, d)
            write_files(sftp, fs, ls)

        where = ds[0] if ds else next(iter(fs), next(iter(ls), ""))
        what = f"{len(ds)} directories, {len(fs)} files and {len(ls)} links such as"
        # Writing again after a drop leaves the same files; a link made twice fails.
        self._call(f"write {what}", where, op, idempotent=not ls)

    def renames(self, pairs: Sequence[tuple[str, str]]) -> list[OSError | None]:
        full = [(self.expand_path(s), self.expand_path(d)) for s, d in pairs]
        if not full:
            return []
        what = f"rename {len(full)} paths such as"
        return self._call(
            what,
            f"{full[0][0]} to {full[0][1]}",
            lambda sftp: renames(sftp, full),
            idempotent=False,
        )

    def exists(self, path: str) -> bool:
        p = self.expand_path(path)

        def op(sftp: paramiko.SFTPClient) -> bool:
            try:
                sftp.stat(p)
                return True
            except OSError:
                if not sftp_answers(sftp):
                    raise
                return False  # as os.path.exists: whatever cannot be stat'ed does not exist

        return self._call("stat", p, op, idempotent=True)

    def create_exclusive(self, path: str, data: bytes = b"") -> bool:
        p = self.expand_path(path)

        def op(sftp: paramiko.SFTPClient) -> bool:
            try:
                f = sftp.open(p, "wx")
            except OSError as e:
                # SFTP v3 has no "already exists" status: OpenSSH answers a plain failure.
                if e.errno is None and sftp_answers(sftp) and _stat_or_none(sftp, p):
                    return False
                raise
            with f:
                if data:
                    f.write(data)
            return True

        return self._call("create", p, op, idempotent=False)

    def list_dir(self, path: str) -> list[str]:
        p = self.expand_path(path)

        def op(sftp: paramiko.SFTPClient) -> list[str]:
            try:
                return list(sftp.listdir(p))
            except FileNotFoundError:
                return []

        return self._call("list", p, op, idempotent=True)

    def list_dirs(self, paths: Sequence[str]) -> dict[str, list[str]]:
        """Many directories in three round trips (see :mod:`.sftpbatch`)."""
        if not paths:
            return {}
        full = {path: self.expand_path(path) for path in paths}
        got = self._call(
            "list",
            f"{len(full)} directories such as {next(iter(full.values()))}",
            lambda sftp: list_dirs(sftp, list(dict.fromkeys(full.values()))),
            idempotent=True,
        )
        return {path: got[p] for path, p in full.items()}

    def make_dir(self, path: str) -> None:
        p = posixpath.normpath(self.expand_path(path))
        self._call("make directory", p, lambda sftp: _make_dirs(sftp, p), idempotent=True)

    def stat_path(self, path: str) -> PathStat:
        return self._found(self.stat_paths([path]), path, "stat")

    def stat_paths(self, paths: Sequence[str]) -> dict[str, PathStat | None]:
        """Many paths in one round trip (a link: two more for it); None for a missing one."""
        full = {path: self.expand_path(path) for path in paths}

        def op(sftp: paramiko.SFTPClient) -> dict[str, PathStat | None]:
            got = lstat_all(sftp, list(dict.fromkeys(full.values())))
            return {p: _path_stat(sftp, p, attrs, self.host) for p, attrs in got.items()}

        if not full:
            return {}
        first = next(iter(full.values()))
        got = self._call(
            "stat",
            first if len(full) == 1 else f"{len(full)} paths such as {first}",
            op,
            idempotent=True,
        )
        return {path: got[p] for path, p in full.items()}

    def chmod(self, path: str, mode: int) -> None:
        p = self.expand_path(path)
        self._call("chmod", p, lambda sftp: sftp.chmod(p, mode), idempotent=True)

    def rename(self, src: str, dst: str) -> None:
        s, d = self.expand_path(src), self.expand_path(dst)
        self._call("rename", f"{s} to {d}", lambda sftp: sftp.posix_rename(s, d), idempotent=False)

    def symlink(self, target: str, link: str) -> None:
        t, lk = self.expand_path(target), self.expand_path(link)
        self._call("symlink", f"{lk} -> {t}", lambda sftp: sftp.symlink(t, lk), idempotent=False)


def _make_dirs(sftp: paramiko.SFTPClient, d: str) -> None:
    """``mkdir -p d`` (mode 0700), as one SFTP request where the parent exists."""
    try:
        sftp.mkdir(d, 0o700)
        return
    except FileNotFoundError:
        parent = posixpath.dirname(d)
        if parent == d:
            raise
        _make_dirs(sftp, parent)
    except OSError:
        if not sftp_answers(sftp):
            raise
        attrs = _stat_or_none(sftp, d)
        if attrs is None:
            raise
        if not _is_dir(attrs):
            raise FileExistsError(errno.EEXIST, "exists and is not a directory", d) from None
        return
    try:
        sftp.mkdir(d, 0o700)
    except OSError:
        attrs = _stat_or_none(sftp, d) if sftp_answers(sftp) else None
        if attrs is None or not _is_dir(attrs):
            raise


def _path_stat(
    sftp: paramiko.SFTPClient, p: str, attrs: paramiko.SFTPAttributes | None, host: str
) -> PathStat | None:
    """What :mod:`hpcexec.trust` needs of ``p`` from its ``lstat`` (a link is followed on the
    server: realpath(3), then its target's owner and mode)."""
    if attrs is None:
        return None
    link = attrs.st_mode is not None and stat.S_ISLNK(attrs.st_mode)
    target = p
    if link:
        try:
            target, attrs = sftp.normalize(p), sftp.stat(p)
        except FileNotFoundError:  # a dangling link: as os.stat, the path is not there
            return None
    if attrs.st_uid is None or attrs.st_mode is None:
        raise TransportError(f"the SFTP server of {host} gives no owner or mode for {p}")
    return PathStat(attrs.st_uid, attrs.st_mode, link, target)


def _stat_or_none(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPAttributes | None:
    try:
        return sftp.stat(path)
    except OSError:
        return None


def _is_dir(attrs: paramiko.SFTPAttributes) -> bool:
    return attrs.st_mode is not None and stat.S_ISDIR(attrs.st_mode)
