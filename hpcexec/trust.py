"""What hpcexec may trust: a path it runs or loads from (the cache directory, ``jobs/``,
``secrets/``, the keys, the store, a job directory) belongs to the user and cannot be written
(a key: read either) by anyone else, checked at a symlink's target. One that fails is refused
with the ``chmod``/``chown`` that fixes it; one that hpcexec made itself and that is the user's
is repaired (its mode), never a link or another user's path.

The checks run wherever the files are: here with :mod:`os`, on another host through a
transport, which offers the same three calls as :class:`LocalFiles`. Imported by the runner:
standard library only.
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
from dataclasses import dataclass
from typing import Protocol

from .errors import UntrustedPath

log = logging.getLogger(__name__)

OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH  # what a trusted directory or file must not allow
ANY_ACCESS = 0o077  # what a key must not allow: others may neither read nor write it
STORE_SUFFIXES = ("", "-wal", "-shm")  # the SQLite files of the store


@dataclass(frozen=True)
class PathStat:
    """What a stat says of a path: its owner and mode, at the target of a link."""

    uid: int
    mode: int
    link: bool  # the path itself is a symbolic link
    target: str  # the path with every link resolved


class Files(Protocol):
    """The calls a check needs from the filesystem that holds the paths."""

    def stat_path(self, path: str) -> PathStat: ...

    def user_id(self) -> int: ...

    def chmod(self, path: str, mode: int) -> None: ...


class LocalFiles:
    """This machine's filesystem, as the current user sees it."""

    def stat_path(self, path: str) -> PathStat:
        st = os.stat(path)  # FileNotFoundError when it (or a link's target) is not there
        return PathStat(st.st_uid, st.st_mode, os.path.islink(path), os.path.realpath(path))

    def user_id(self) -> int:
        return os.getuid()

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(path, mode)


LOCAL = LocalFiles()


def check(
    path: str | os.PathLike,
    what: str,
    *,
    forbidden: int = OTHERS_WRITE,
    repair: bool = False,
    files: Files = LOCAL,
    seen: PathStat | None = None,
) -> None:
    """Raise :class:`UntrustedPath` unless ``path`` belongs to the user and allows none of the
    ``forbidden`` mode bits. ``repair``: hpcexec made it, so a mode that allows too much is
    taken back (with a warning) when the path is the user's own and not a link. ``what``
    names it in messages ("the jobs directory"). ``seen``: the path's stat where the caller
    has just read it (with others, in one exchange). FileNotFoundError if it does not exist."""
    path = os.fspath(path)
    st = seen or files.stat_path(path)
    uid = files.user_id()
    shown = f"{path} (a link to {st.target})" if st.link else path
    q = shlex.quote(st.target)
    if st.uid != uid:
        raise UntrustedPath(
            f"{what} {shown} belongs to another user (uid {st.uid}), who could change what "
            f"hpcexec runs or loads; it was not used. Use a path of your own, or give it to "
            f"yourself (as root: `chown {uid} {q}`)" + (", or remove the link" if st.link else "")
        )
    bad = stat.S_IMODE(st.mode) & forbidden
    if not bad:
        return
    fix = f"chmod 600 {q}" if forbidden == ANY_ACCESS else f"chmod go-w {q}"
    how = "read or written" if forbidden == ANY_ACCESS else "written"
    if repair and not st.link:
        files.chmod(path, stat.S_IMODE(st.mode) & ~forbidden)
        log.warning(
            "%s %s could be %s by other users (mode %s): hpcexec made it, so it ran `%s`%s",
            what,
            path,
            how,
            stat.filemode(st.mode),
            fix,
            "; if others may have read it, remove it to make a new key (results "
            "sealed with it can then no longer be read)"
            if forbidden == ANY_ACCESS
            else "",
        )
        return
    raise UntrustedPath(
        f"{what} {shown} can be {how} by other users (mode {stat.filemode(st.mode)}), who could "
        f"change what hpcexec runs or loads; it was not used. Make it private with `{fix}`"
    )


def check_cache(cache_dir: str | os.PathLike, store_name: str) -> None:
    """The cache directory (the user's choice: refused, never changed) and the store's files
    in it that exist (hpcexec's: repaired)."""
    check(cache_dir, "the cache directory")
    for suffix in STORE_SUFFIXES:
        try:
            check(os.path.join(cache_dir, store_name + suffix), "the job store", repair=True)
        except FileNotFoundError:
            pass


def check_job_dir(jobdir: str, script: str | None = None, *, files: Files = LOCAL) -> None:
    """A job's directory, and the script in it that is about to be run, before they are."""
    check(jobdir, "the job directory", files=files)
    if script is not None:
        check(os.path.join(jobdir, script), "the job script", files=files)
