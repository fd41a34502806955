"""Slot reuse inside an array job: an element that has run its own record goes on to run
records of the same array whose elements have not started yet, so a map of many short
tasks pays for a scheduler slot and a Python start-up a few times, not once per task.

Runs inside the job (imported by the runner), so it stays light. The array directory holds:

- ``share.json``: the records' job directories and names, their output files, and the
  array's time limit;
- ``claims/``: one file per record, created exclusively by whoever runs (or cancels) it:
  ``claims/<i>`` is the claim, ``claims/<i>@<element id>`` says which element ran it. The
  client reads this directory to follow a record to the element that ran it.

Every record runs in a forked child of a runner that imports nothing of the user's, so each
task starts from a clean interpreter state, as it would in its own job. An element takes
records from the tail of the array (their elements start last) and stops taking them when
the next one might not end inside its time limit:

- its deadline: the earlier of ``SLURM_JOB_END_TIME`` (the job's end, which newer SLURMs
  set; other schedulers tell nothing alike) and the array's time limit from ``share.json``
  counted from the element's start; 300 s from its start when neither is known;
- a record's expected time: the longest measured time of the array's records, those this
  element ran and those that ended elsewhere (the ``wall_s`` of their ``usage`` files, at
  most :data:`PEEK` of them read per decision, each found once: :class:`RecordTimes`);
- the element takes another record only while ``now + 1.5 x expected + margin`` is before
  its deadline, the margin 5% of its time (at least 5 s) for writing results and for the
  scheduler's clock. It reads the usage files after each record it ran, so each decision
  costs at most :data:`PEEK` file reads, and a large array no more than that per record.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, unquote

from .jobfiles import create_new, exit_forked, redirect_output, write_started
from .layout import USAGE

RunTask = Callable[[Path, Path, Callable[[], None]], int]
"""The runner's :func:`hpcexec.runner.run_task`, handed to :func:`serve` (so this module
does not import the runner, which imports it)."""

SHARE = "share.json"
CLAIMS = "claims"
DEFAULT_BUDGET = 300.0  # seconds an element may keep taking work when its time limit is unknown
END_TIME = "SLURM_JOB_END_TIME"  # the job's end (seconds since the epoch), where set
SAFETY = 1.5  # times the longest measured record: the time the next one may take
MARGIN_FRACTION = 0.05  # of the element's time, kept free at its end
MIN_MARGIN = 5.0  # seconds
PEEK = 4  # usage files of other records read at most per decision


def claim(array_dir: str | os.PathLike, index: int, by: str = "") -> bool:
    """Claim record ``index`` of the array (False when someone already has). ``by`` names
    the element that will run it."""
    claims = os.path.join(array_dir, CLAIMS)
    if not create_new(os.path.join(claims, str(index))):
        return False
    if by:
        os.close(
            os.open(
                os.path.join(claims, f"{index}@{quote(by, safe='')}"),
                os.O_WRONLY | os.O_CREAT,
                0o644,
            )
        )
    return True


def parse_claims(names: list[str]) -> tuple[set[int], dict[int, str]]:
    """The claimed indices, and for those taken by another element, which one."""
    claimed: set[int] = set()
    runner: dict[int, str] = {}
    for name in names:
        index, _, by = name.partition("@")
        if not index.isdigit():
            continue
        if by:
            runner[int(index)] = unquote(by)
        else:
            claimed.add(int(index))
    return claimed, runner


class RecordTimes:
    """The longest measured time of an array's records (``longest``, seconds): those an
    element ran (:meth:`ran`) and those that ended elsewhere, whose ``usage`` files
    :meth:`look` reads a few at a time, lowest index first (their elements started first),
    each read once it is there, so an element reads O(records it takes) files."""

    def __init__(self, jobdirs: list[str], own_index: int) -> None:
        self.longest = 0.0
        self._jobdirs = jobdirs
        self._unread = deque(i for i in range(len(jobdirs)) if i != own_index)

    def ran(self, seconds: float) -> None:
        """This element ran a record in ``seconds``."""
        self.longest = max(self.longest, seconds)

    def look(self, most: int = PEEK) -> int:
        """Read the usage files of up to ``most`` records not yet found ended; how many
        were there."""
        found = 0
        for _ in range(min(most, len(self._unread))):
            index = self._unread.popleft()
            wall = _wall_s(os.path.join(self._jobdirs[index], USAGE))
            if wall is None:
                self._unread.append(index)  # not ended yet: later
            else:
                found += 1
                self.longest = max(self.longest, wall)
        return found


def _wall_s(path: str) -> float | None:
    """The ``wall_s`` of a usage file, or None while it is not there."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "wall_s":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def deadline(time_limit: float | None, start: float) -> float:
    """The :func:`time.monotonic` instant by which an element that started at ``start``
    must have ended its last record, its margin taken off (see the module's docstring)."""
    ends = [start + time_limit] if time_limit else []
    try:
        ends.append(time.monotonic() + float(os.environ[END_TIME]) - time.time())
    except (KeyError, ValueError):
        pass
    end = min(ends) if ends else start + DEFAULT_BUDGET
    return end - max(MIN_MARGIN, MARGIN_FRACTION * (end - start))


class _Stop(BaseException):
    """The scheduler asked this element to stop."""

    def __init__(self, signum: int) -> None:
        self.signum = signum


def _stop(signum: int, frame: object) -> None:
    raise _Stop(signum)


def serve(own: Path, array_dir: Path, key_file: Path, run_task: RunTask) -> int:
    """Run this element's record ``own``, then others of the array while time allows, each
    trusting only ``key_file`` and run by ``run_task`` in a forked child; returns the exit
    code of the element (that of its own record)."""
    t0 = time.monotonic()
    spec = json.loads((array_dir / SHARE).read_text())
    jobdirs: list[str] = spec["jobdirs"]
    me = os.environ.get("HPCEXEC_JOB_ID", "")
    end = deadline(spec.get("time_limit"), t0)
    own_index = jobdirs.index(str(own)) if str(own) in jobdirs else -1
    times = RecordTimes(jobdirs, own_index)
    signal.signal(signal.SIGTERM, _stop)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    code = 0
    try:
        started = time.monotonic()
        code = _run_child(own, None, spec, key_file, run_task)
        times.ran(time.monotonic() - started)
        times.look()
        cursor = len(jobdirs) - 1
        while cursor >= 0 and time.monotonic() + SAFETY * times.longest < end:
            index, cursor = cursor, cursor - 1
            if index == own_index or not claim(array_dir, index, me):
                continue
            started = time.monotonic()
            _run_child(Path(jobdirs[index]), index, spec, key_file, run_task, array_dir)
            times.ran(time.monotonic() - started)
            times.look()
    except _Stop as s:
        return 128 + s.signum
    return code


def _run_child(
    jobdir: Path,
    index: int | None,
    spec: dict,
    key_file: Path,
    run_task: RunTask,
    array_dir: Path | None = None,
) -> int:
    """Fork a child that runs one record; wait for it and return its exit code. ``index``
    is None for the element's own record, whose files and variables are already set."""
    out = err = None
    if index is not None:
        assert array_dir is not None
        out, err = spec["outputs"][index]
        base = spec.get("index_base", 0)
        for suffix in ("out", "err"):  # the element, if it still starts, must not write there
            try:
                os.unlink(array_dir / f"{index + base}.{suffix}")
            except FileNotFoundError:
                pass
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(jobdir, index, spec, key_file, out, err, run_task)  # never returns
    return _wait(pid)


def _wait(pid: int) -> int:
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status) % 256
            signal.sigtimedwait({signal.SIGCHLD}, 1.0)
    except _Stop:
        # The scheduler signals the whole job; give the child its grace time to record it.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
            time.sleep(0.05)
        raise


def _child(
    jobdir: Path,
    index: int | None,
    spec: dict,
    key_file: Path,
    out: str | None,
    err: str | None,
    run_task: RunTask,
) -> None:
    def prepare() -> None:
        if index is not None:
            assert out is not None and err is not None
            redirect_output(out, err, append=False)
            os.environ["HPCEXEC_JOB_NAME"] = spec["names"][index]
            own = spec.get("indices", [None] * (index + 1))[index]  # its place in its map
            os.environ["HPCEXEC_ARRAY_INDEX"] = str(index if own is None else own)
            write_started(jobdir, os.environ.get("HPCEXEC_JOB_ID", ""))
        sys.argv = [sys.executable, "-m", "hpcexec.runner", str(jobdir), str(key_file)]

    def body() -> int:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        return run_task(jobdir, key_file, prepare)

    exit_forked(body)
