"""The local transport: commands and files on this machine."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from ..errors import TransportError
from ..jobfiles import write_atomic
from ..trust import LOCAL, PathStat
from .base import CommandResult, Transport

log = logging.getLogger(__name__)


class LocalShell(Transport):
    """Runs commands with :mod:`subprocess` and reads files directly.

    ``warm_start`` (read/write): whether local jobs start from a fork server (the default on
    Linux unless ``HPCEXEC_FORKSERVER=0``); False starts each from its job script. It turns
    False by itself when the fork server cannot be used."""

    def __init__(self) -> None:
        self.host = socket.gethostname()
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._exit_status: dict[int, int] = {}
        # Warm starts need Linux's abstract sockets and peer credentials.
        self.warm_start = (
            sys.platform.startswith("linux") and os.environ.get("HPCEXEC_FORKSERVER", "1") != "0"
        )
        self._lock = threading.Lock()

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float | None = 60.0,
        idempotent: bool = False,
    ) -> CommandResult:
        log.debug("run %s", argv)
        try:
            p = subprocess.run(
                list(argv),
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except FileNotFoundError as e:
            raise TransportError(
                f"command not found: {argv[0]} (is it installed and on PATH?)"
            ) from e
        except subprocess.TimeoutExpired as e:
            raise TransportError(f"command timed out after {timeout} s: {' '.join(argv)}") from e
        return CommandResult(tuple(argv), p.returncode, p.stdout, p.stderr)

    def spawn_detached(
        self,
        argv: Sequence[str],
        *,
        cwd: str,
        stdout: str,
        stderr: str,
        env: Mapping[str, str] | None = None,
    ) -> int:
        self._reap()
        full_env = {**os.environ, **(env or {})}
        try:
            with (
                open(stdout, "ab") as out,
                open(stderr, "ab") if stderr != stdout else nullcontext(out) as err,
            ):
                p = subprocess.Popen(
                    list(argv),
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    env=full_env,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as e:
            raise TransportError(f"could not start {argv[0]} in {cwd}: {e}") from e
        with self._lock:
            self._children[p.pid] = p
        return p.pid

    def spawn_warm(self, python: str, request: dict[str, Any]) -> int | None:
        if not self.warm_start:
            return None
        from .. import forkserver

        try:
            return forkserver.spawn(python, request)
        except (OSError, ValueError) as e:
            log.warning("fork server unavailable (%s); starting jobs from their scripts", e)
            self.warm_start = False
            return None

    def _reap(self) -> None:
        # Our detached children still need waiting for, or they stay zombies while we live.
        with self._lock:
            for pid, p in list(self._children.items()):
                if p.poll() is not None:
                    del self._children[pid]
                    self._exit_status[pid] = p.returncode

    def process_stat(self, pid: int) -> str | None:
        self._reap()
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return None
        except OSError:
            return None
        return text

    def exit_status(self, pid: int) -> int | None:
        self._reap()
        with self._lock:
            return self._exit_status.get(pid)

    def signal_group(self, pid: int, signum: int) -> bool:
        return _signal(os.killpg, pid, signum, "process group")

    def signal_process(self, pid: int, signum: int) -> bool:
        return _signal(os.kill, pid, signum, "process")

    def read_bytes(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def read_tail(self, path: str, max_bytes: int) -> str:
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - max_bytes))
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def write_bytes(self, path: str, data: bytes, *, atomic: bool = True) -> None:
        if atomic:
            write_atomic(path, data)
        else:
            with open(path, "wb") as f:
                f.write(data)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def create_exclusive(self, path: str, data: bytes = b"") -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True

    def list_dir(self, path: str) -> list[str]:
        try:
            return os.listdir(path)
        except FileNotFoundError:
            return []

    def make_dir(self, path: str) -> None:
        try:
            os.mkdir(path, mode=0o700)
        except FileExistsError:
            pass
        except FileNotFoundError:
            os.makedirs(path, mode=0o700, exist_ok=True)

    def stat_path(self, path: str) -> PathStat:
        return LOCAL.stat_path(path)

    def user_id(self) -> int:
        return LOCAL.user_id()

    def chmod(self, path: str, mode: int) -> None:
        LOCAL.chmod(path, mode)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def symlink(self, target: str, link: str) -> None:
        os.symlink(target, link)

    def which(self, command: str) -> str | None:
        return shutil.which(command)

    def remove_tree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def cpu_count(self) -> int:
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1


def _signal(send: Callable[[int, int], None], pid: int, signum: int, what: str) -> bool:
    """``send(pid, signum)``; False when ``pid`` no longer exists."""
    try:
        send(pid, signum)
        return True
    except ProcessLookupError:
        return False
    except PermissionError as e:
        raise TransportError(f"not allowed to signal {what} {pid}: {e}") from e
