"""Reading and writing many files over SFTP in a few round trips.

paramiko sends one request and waits for its answer, so reading a small file costs four round
trips (open, stat, read, close) and reading N of them 4N: on a link with 30 ms of latency,
a hundred results take twelve seconds. Here each step's requests for every file go out
together and the answers are matched by request number (as paramiko's own prefetch does):
two round trips for any number of files of up to 32 KiB, one more for bigger ones; the
handles are closed without waiting for the answers. Writing a submission's files is three
steps the same way (directories; opens; writes, closes and links), renaming many paths one,
listing many directories three (opens; reads; the reads that find each one's end), looking
at many paths (``lstat``) one.
No step sends a request that depends on another request of the same step, so nothing relies
on a server answering in order.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

import paramiko
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_LSTAT,
    CMD_MKDIR,
    CMD_NAME,
    CMD_OPEN,
    CMD_OPENDIR,
    CMD_READ,
    CMD_READDIR,
    CMD_STATUS,
    CMD_SYMLINK,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_READ,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    int64,
)
from paramiko.sftp_attr import SFTPAttributes

CHUNK = 32768  # the largest read every SFTP server answers in full (and write it takes)
WAVE = 64  # reads of one big file in flight at once (2 MiB, an SSH channel's window)
IN_FLIGHT = 1024  # requests sent before their answers are read (each answer is small)


class _Answers:
    """Collects the answers to the requests sent with it (paramiko calls ``_async_response``)."""

    def __init__(self) -> None:
        self.got: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.got[num] = (t, msg)


class _Batch:
    def __init__(self, sftp: paramiko.SFTPClient) -> None:
        self.sftp = sftp
        self.answers = _Answers()

    def send(self, t: int, *args: object) -> int:
        return int(self.sftp._async_request(self.answers, t, *args))

    def wait(self, nums: Iterable[int]) -> None:
        for num in nums:
            while num not in self.answers.got:
                self.sftp._read_response()  # one answer, handed to whoever asked for it

    def take(self, num: int, want: int) -> paramiko.Message | None:
        """The answer of type ``want``; None for end of file; OSError for an error status."""
        t, msg = self.answers.got.pop(num)
        if t == want:
            return msg
        if t == CMD_STATUS:
            try:
                self.sftp._convert_status(msg)
            except EOFError:
                return None
        raise OSError(errno.EIO, f"unexpected SFTP answer {t} (wanted {want})")

    def open_all(
        self, paths: Iterable[str], flags: int, *, dirs: bool = False
    ) -> tuple[dict[str, bytes], list[str], OSError | None]:
        """Open every path (``dirs``: every directory, to read) in one round trip: the
        handles, the paths that do not exist, and the first other error (the handles opened
        are returned whatever failed)."""
        opened = {
            p: self.send(CMD_OPENDIR, p)
            if dirs
            else self.send(CMD_OPEN, p, flags, SFTPAttributes())
            for p in paths
        }
        self.wait(opened.values())
        handles: dict[str, bytes] = {}
        missing: list[str] = []
        failure: OSError | None = None
        for p, num in opened.items():
            try:
                msg = self.take(num, CMD_HANDLE)
                if msg is None:
                    raise OSError(errno.EIO, "end of file while opening", p)
                handles[p] = msg.get_binary()
            except FileNotFoundError as e:
                missing.append(p)
                if not flags & SFTP_FLAG_READ:
                    failure = failure or e
            except OSError as e:
                failure = failure or e
        return handles, missing, failure

    def status(self, num: int) -> None:
        """Nothing for an answer that says done; the OSError of one that says otherwise."""
        t, msg = self.answers.got.pop(num)
        if t != CMD_STATUS:
            raise OSError(errno.EIO, f"unexpected SFTP answer {t} (wanted a status)")
        self.sftp._convert_status(msg)

    def statuses(self, nums: list[int]) -> list[OSError | None]:
        """Each request's error (None where it was done), reading answers in waves."""
        self.wait(nums)
        out: list[OSError | None] = []
        for num in nums:
            try:
                self.status(num)
                out.append(None)
            except OSError as e:
                out.append(e)
        return out


def make_dirs(sftp: paramiko.SFTPClient, dirs: list[str]) -> list[str]:
    """``mkdir`` each of ``dirs`` (mode 0700), one level of depth per round trip; those that
    failed (they may exist already, or lack a parent) for the caller to look at."""
    batch = _Batch(sftp)
    failed: list[str] = []
    for depth in sorted({d.rstrip("/").count("/") for d in dirs}):
        level = [d for d in dirs if d.rstrip("/").count("/") == depth]
        nums = [batch.send(CMD_MKDIR, d, _mode(0o700)) for d in level]
        failed += [d for d, e in zip(level, batch.statuses(nums), strict=True) if e is not None]
    return failed


def write_files(sftp: paramiko.SFTPClient, files: dict[str, bytes], links: dict[str, str]) -> None:
    """Write ``files`` (created or truncated) and make the symbolic ``links`` (link ->
    target), in two round trips for any number of them; the first error is raised once every
    answer is in (no handle is left open)."""
    batch = _Batch(sftp)
    flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC
    handles, _, failure = batch.open_all(files, flags)
    sent: list[int] = []
    if failure is None:
        for p, h in handles.items():
            data = files[p]
            for off in range(0, len(data), CHUNK):
                sent.append(batch.send(CMD_WRITE, h, int64(off), data[off : off + CHUNK]))
                if len(sent) >= IN_FLIGHT:
                    failure = failure or next((e for e in batch.statuses(sent) if e), None)
                    sent = []
        # paramiko's SFTPClient.symlink sends (target, link), the order OpenSSH expects.
        sent += [batch.send(CMD_SYMLINK, target, link) for link, target in links.items()]
    sent += [batch.send(CMD_CLOSE, h) for h in handles.values()]
    failure = failure or next((e for e in batch.statuses(sent) if e), None)
    if failure is not None:
        raise failure


def renames(sftp: paramiko.SFTPClient, pairs: list[tuple[str, str]]) -> list[OSError | None]:
    """``rename(2)`` each ``(src, dst)`` (OpenSSH's posix-rename, as paramiko's
    ``posix_rename``) in one round trip; each one's error, or None."""
    batch = _Batch(sftp)
    nums = [batch.send(CMD_EXTENDED, "posix-rename@openssh.com", s, d) for s, d in pairs]
    return batch.statuses(nums)


def lstat_all(sftp: paramiko.SFTPClient, paths: list[str]) -> dict[str, SFTPAttributes | None]:
    """``lstat`` each of ``paths`` in one round trip (None for one that does not exist); any
    other error is raised once every answer is in."""
    batch = _Batch(sftp)
    nums = {p: batch.send(CMD_LSTAT, p) for p in paths}
    batch.wait(nums.values())
    out: dict[str, SFTPAttributes | None] = {}
    failure: OSError | None = None
    for p, num in nums.items():
        try:
            msg = batch.take(num, CMD_ATTRS)
            out[p] = SFTPAttributes._from_msg(msg) if msg is not None else None
        except FileNotFoundError:
            out[p] = None
        except OSError as e:
            failure = failure or e
    if failure is not None:
        raise failure
    return out


def _mode(mode: int) -> SFTPAttributes:
    attrs = SFTPAttributes()
    attrs.st_mode = mode
    return attrs


def list_dirs(sftp: paramiko.SFTPClient, paths: list[str]) -> dict[str, list[str]]:
    """The names in each directory of ``paths`` ([] for one that does not exist): one round
    trip opens them all, one reads a wave of names from each (a server answers up to about
    a hundred a read) until every one is at its end. Any other error is raised."""
    batch = _Batch(sftp)
    handles, _, failure = batch.open_all(paths, SFTP_FLAG_READ, dirs=True)
    out: dict[str, list[str]] = {p: [] for p in paths}
    try:
        if failure is not None:
            raise failure
        reading = dict(handles)
        while reading:
            asked = {p: batch.send(CMD_READDIR, h) for p, h in reading.items()}
            batch.wait(asked.values())
            for p, num in asked.items():
                msg = batch.take(num, CMD_NAME)
                if msg is None:  # at its end
                    del reading[p]
                    continue
                for _ in range(msg.get_int()):
                    name, _long = msg.get_text(), msg.get_text()
                    SFTPAttributes._from_msg(msg)  # read past each name's attributes
                    if name not in (".", ".."):
                        out[p].append(name)
    finally:
        for h in handles.values():
            batch.send(CMD_CLOSE, h)
    return out


def read_files(sftp: paramiko.SFTPClient, paths: list[str]) -> dict[str, bytes | None]:
    """The contents of ``paths`` (None for a file that does not exist). Any other error is
    raised as the OSError the server's status maps to."""
    batch = _Batch(sftp)
    handles, missing, failure = batch.open_all(paths, SFTP_FLAG_READ)
    out: dict[str, bytes | None] = dict.fromkeys(missing)
    try:
        if failure is not None:
            raise failure
        stats = {p: batch.send(CMD_FSTAT, h) for p, h in handles.items()}
        firsts = {p: batch.send(CMD_READ, h, int64(0), CHUNK) for p, h in handles.items()}
        batch.wait([*stats.values(), *firsts.values()])
        sizes: dict[str, int] = {}
        for p in handles:
            attrs = batch.take(stats[p], CMD_ATTRS)
            first = batch.take(firsts[p], CMD_DATA)
            sizes[p] = SFTPAttributes._from_msg(attrs).st_size or 0 if attrs else 0
            out[p] = first.get_string() if first is not None else b""
        # The rest of the bigger files, WAVE chunks at a time.
        wanted = [(p, off) for p in handles for off in range(len(out[p] or b""), sizes[p], CHUNK)]
        for start in range(0, len(wanted), WAVE):
            rest = {
                (p, off): batch.send(CMD_READ, handles[p], int64(off), CHUNK)
                for p, off in wanted[start : start + WAVE]
            }
            batch.wait(rest.values())
            for (p, off), num in rest.items():
                msg = batch.take(num, CMD_DATA)
                if msg is not None and off == len(out[p] or b""):
                    out[p] = (out[p] or b"") + msg.get_string()
        for p in handles:  # a short answer (allowed, if rare): read on from where it stopped
            while len(out[p] or b"") < sizes[p]:
                num = batch.send(CMD_READ, handles[p], int64(len(out[p] or b"")), CHUNK)
                batch.wait([num])
                msg = batch.take(num, CMD_DATA)
                if msg is None:
                    break
                out[p] = (out[p] or b"") + msg.get_string()
    finally:
        for h in handles.values():
            batch.send(CMD_CLOSE, h)  # answered later, to the batch, which nobody waits on
    return out
