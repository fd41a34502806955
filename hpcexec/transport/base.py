"""The interface every transport implements (local subprocess, SSH)."""

from __future__ import annotations

import abc
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import TransportError
from ..trust import PathStat

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


#: a GPU line of ``nvidia-smi -L``: "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)"; the MIG
#: devices listed under a GPU ("  MIG 1g.10gb Device 0: (UUID: MIG-...)") are not counted
_GPU_LINE = re.compile(r"^GPU (\d+):", re.M)


def parse_gpu_list(text: str) -> list[str]:
    """The GPU indices listed by ``nvidia-smi -L`` (see :data:`_GPU_LINE`)."""
    return _GPU_LINE.findall(text)


class Transport(abc.ABC):
    """Runs argv and moves files, here or on another host."""

    host: str

    @abc.abstractmethod
    def which(self, command: str) -> str | None:
        """The path of a command on PATH, or None."""

    @abc.abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float | None = 60.0,
        idempotent: bool = False,
    ) -> CommandResult:
        """Run a command to completion and capture its output. ``idempotent``: it may be
        run again if the connection to its host drops while it runs (a status query, not a
        submission)."""

    def expand_path(self, path: str) -> str:
        """``path`` with a leading ``~`` replaced by the home directory where files live."""
        return os.path.expanduser(path)

    @abc.abstractmethod
    def spawn_detached(
        self,
        argv: Sequence[str],
        *,
        cwd: str,
        stdout: str,
        stderr: str,
        env: Mapping[str, str] | None = None,
    ) -> int:
        """Start a process in its own session that outlives the client; return its pid."""

    def spawn_warm(self, python: str, request: dict[str, Any]) -> int | None:
        """Start a Python job from a warm interpreter (see :mod:`hpcexec.forkserver`);
        None when this transport cannot, and the job's script is run instead."""
        return None

    @abc.abstractmethod
    def process_stat(self, pid: int) -> str | None:
        """The text of ``/proc/<pid>/stat``, or None when no such process exists."""

    def exit_status(self, pid: int) -> int | None:
        """How a process this transport started ended (negative: killed by that signal),
        when known; None otherwise."""
        return None

    @abc.abstractmethod
    def signal_group(self, pid: int, signum: int) -> bool:
        """Send a signal to a process group; False when it no longer exists."""

    @abc.abstractmethod
    def signal_process(self, pid: int, signum: int) -> bool:
        """Send a signal to one process (not its group); False when it no longer exists."""

    @abc.abstractmethod
    def read_bytes(self, path: str) -> bytes:
        """Read a whole file (FileNotFoundError when it does not exist)."""

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes | None]:
        """Many whole files at once (None for one that does not exist); a transport with
        latency reads them together."""
        return _each(self.read_bytes, paths)

    @abc.abstractmethod
    def read_tail(self, path: str, max_bytes: int) -> str:
        """The last ``max_bytes`` of a text file, or '' when it does not exist."""

    @abc.abstractmethod
    def write_bytes(self, path: str, data: bytes, *, atomic: bool = True) -> None:
        """Write a file; ``atomic``: to a temporary name, then renamed into place (not
        needed inside a private directory that is itself renamed into place)."""

    def stage(
        self,
        dirs: Sequence[str],
        files: Mapping[str, bytes],
        links: Mapping[str, str] | None = None,
    ) -> None:
        """Make ``dirs`` (in order: parents first; one that exists is fine), then write
        ``files`` (not atomically: they are new, in directories nobody reads yet) and make
        the symbolic ``links`` (link -> target). What a submission writes, at once: a
        transport with latency sends it in a few round trips for any number of files."""
        for d in dirs:
            self.make_dir(d)
        for path, data in files.items():
            self.write_bytes(path, data, atomic=False)
        for link, target in (links or {}).items():
            self.symlink(target, link)

    def renames(self, pairs: Sequence[tuple[str, str]]) -> list[OSError | None]:
        """Rename each ``(src, dst)`` (as :meth:`rename`); each one's error, or None. A
        transport with latency sends them together."""
        out: list[OSError | None] = []
        for src, dst in pairs:
            try:
                self.rename(src, dst)
                out.append(None)
            except OSError as e:
                out.append(e)
        return out

    @abc.abstractmethod
    def exists(self, path: str) -> bool: ...

    @abc.abstractmethod
    def create_exclusive(self, path: str, data: bytes = b"") -> bool:
        """Create a file only if no file of that name exists (atomically: two clients
        cannot both succeed); False when it exists."""

    @abc.abstractmethod
    def list_dir(self, path: str) -> list[str]:
        """The names in a directory; [] when it does not exist."""

    def list_dirs(self, paths: Sequence[str]) -> dict[str, list[str]]:
        """Many directories at once, as :meth:`list_dir` lists each; a transport with latency
        lists them together."""
        return {path: self.list_dir(path) for path in paths}

    @abc.abstractmethod
    def make_dir(self, path: str) -> None:
        """Create a directory and its parents (private to the user)."""

    @abc.abstractmethod
    def stat_path(self, path: str) -> PathStat:
        """The owner and mode of a path, at a link's target, and whether it is a link
        (FileNotFoundError when it does not exist): what :mod:`hpcexec.trust` checks."""

    def stat_paths(self, paths: Sequence[str]) -> dict[str, PathStat | None]:
        """Many paths at once, as :meth:`stat_path` looks at each (None for a missing one);
        a transport with latency looks at them together."""
        return _each(self.stat_path, paths)

    @abc.abstractmethod
    def user_id(self) -> int:
        """The user id files are written as, where they live."""

    @abc.abstractmethod
    def chmod(self, path: str, mode: int) -> None:
        """Set a path's mode bits (at a link's target)."""

    @abc.abstractmethod
    def rename(self, src: str, dst: str) -> None:
        """Rename a file or directory (atomic on one filesystem)."""

    @abc.abstractmethod
    def symlink(self, target: str, link: str) -> None:
        """Make ``link`` point at ``target``."""

    @abc.abstractmethod
    def remove_tree(self, path: str) -> None:
        """Remove a directory and everything in it; nothing if it does not exist."""

    @abc.abstractmethod
    def cpu_count(self) -> int: ...

    def gpu_ids(self) -> list[str]:
        """The GPUs of this transport's host, as ``nvidia-smi -L`` numbers them (``"0"``,
        ``"1"``, ...): the ids ``CUDA_VISIBLE_DEVICES`` takes. Empty when ``nvidia-smi`` is
        not on PATH or fails (no driver, no device). One command, through :meth:`run`, so
        the local and the SSH transports share it."""
        if self.which("nvidia-smi") is None:
            return []
        try:
            result = self.run(["nvidia-smi", "-L"], timeout=60.0, idempotent=True)
        except TransportError as e:
            log.info("nvidia-smi -L on %s failed (%s): no GPUs are used there", self.host, e)
            return []
        if not result.ok:
            log.info(
                "nvidia-smi -L on %s exited with %d (%s): no GPUs are used there",
                self.host,
                result.returncode,
                result.stderr.strip() or result.stdout.strip(),
            )
            return []
        return parse_gpu_list(result.stdout)

    def close(self) -> None:  # noqa: B027 - optional: a local transport holds nothing
        """Release connections."""


def _each(one: Callable[[str], T], paths: Sequence[str]) -> dict[str, T | None]:
    """``one(path)`` for each path, None where it raised FileNotFoundError."""
    out: dict[str, T | None] = {}
    for path in paths:
        try:
            out[path] = one(path)
        except FileNotFoundError:
            out[path] = None
    return out
