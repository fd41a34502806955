"""From a finished job's record and files to its futures' values or exceptions, and to
:class:`~hpcexec.future.JobInfo`.

Reads only: the result file (sealed with the cache key), the output files, the usage file
and the scheduler's accounting. A file that cannot be reached (a dropped connection) raises
:class:`Unreachable`, so the caller leaves the futures as they are and tries again.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from . import integrity
from . import payload as pl
from .errors import CacheError, JobFailed, OutOfMemory, TransportError
from .future import JobFuture, JobInfo, ShellResult
from .layout import RESTARTS, JobLayout
from .record import JobRecord
from .resources import task_count
from .states import JobState
from .transport.base import Transport

STDERR_TAIL_BYTES = 2000

#: a future, its value, its exception, and every task's value (None: a job of one task)
Settled = tuple[JobFuture, Any, "BaseException | None", "list[Any] | None"]


log = logging.getLogger(__name__)
ReadAhead = Mapping[str, "bytes | None"]  # files read already (None: it does not exist)
EMPTY: ReadAhead = {}


class Unreachable(TransportError):
    """A finished job's files could not be read (a dropped connection, say)."""


class Accounting(Protocol):
    """The driver's accounting query (what :meth:`Outcomes.info` asks of it)."""

    def accounting(self, rec: JobRecord) -> Any: ...


def _in_task(exc: BaseException, rank: int, ntasks: int) -> BaseException:
    """``exc``, raised in task ``rank`` of ``ntasks``, saying so (``task_rank``, a note)."""
    if ntasks > 1:
        try:
            exc.task_rank = rank  # type: ignore[attr-defined]
        except AttributeError:  # an exception type that takes no attributes
            pass
        note = getattr(exc, "add_note", None)  # Python 3.11 and later
        if note is not None:
            note(f"raised in task {rank} of {ntasks} (rank {rank})")
    return exc


def layout(rec: JobRecord) -> JobLayout:
    """Where a job's files are."""
    return JobLayout.of(rec.jobdir, rec.resources)


class Outcomes:
    """Turns records and the files of their jobs into values, exceptions and infos."""

    def __init__(
        self, transport: Transport, keyring: integrity.KeyRing, driver: Accounting, host: str
    ) -> None:
        self.transport = transport
        self.keyring = keyring
        self.driver = driver
        self.host = host

    def read_ahead(self, records: Iterable[JobRecord]) -> ReadAhead:
        """The files that settling these finished records reads (results, a shell job's
        output), read together: over SSH a few round trips, not two per job. Empty when they
        cannot be read now (settling then reads each file itself, and says what is wrong)."""
        paths: list[str] = []
        for rec in records:
            lay = layout(rec)
            if rec.kind == "shell":
                paths += [lay.output("stdout"), lay.output("stderr")]
            else:
                paths += [lay.task_result(r) for r in range(task_count(rec.resources))]
        if len(paths) < 2:
            return {}
        try:
            return self.transport.read_files(paths)
        except (TransportError, OSError) as e:
            log.debug("reading %d result files together failed (%s); one by one", len(paths), e)
            return {}

    def _fetch(self, path: str, ahead: ReadAhead) -> bytes:
        """A file's bytes, from ``ahead`` where it was read already."""
        if path not in ahead:
            return self.transport.read_bytes(path)
        data = ahead[path]
        if data is None:
            raise FileNotFoundError(errno.ENOENT, "No such file", path)
        return data

    def read_output(self, rec: JobRecord, stream: str, ahead: ReadAhead = EMPTY) -> str:
        """The text of a job's ``stdout`` or ``stderr`` so far ("" before there is any)."""
        try:
            return self._fetch(layout(rec).output(stream), ahead).decode(errors="replace")
        except FileNotFoundError:
            return ""
        except TransportError as e:
            raise Unreachable(str(e)) from e

    def _read(
        self, rec: JobRecord, rank: int, ahead: ReadAhead
    ) -> tuple[list[bytes] | None, Exception | None]:
        """The outcomes task ``rank`` of job ``rec`` left (None: no file), or the error
        reading them; raises :class:`Unreachable` when the file cannot be reached."""
        where = layout(rec).task_result(rank)
        try:
            data, _ = integrity.unseal(self._fetch(where, ahead), self.keyring, where)
            return pl.load_outcomes(data, where), None
        except FileNotFoundError:
            return None, None
        except CacheError as e:
            return None, e
        except TransportError as e:
            raise Unreachable(str(e)) from e

    def settle(
        self, rec: JobRecord, futures: list[JobFuture], ahead: ReadAhead = EMPTY
    ) -> list[Settled]:
        """The value or exception of each future of finished job ``rec`` that is not done,
        with every task's value where the job ran in several (:func:`task_count`); ``ahead``:
        files :meth:`read_ahead` read. Raises :class:`Unreachable` (and decides nothing)
        when the files cannot be read."""
        ntasks = task_count(rec.resources) if rec.kind in ("call", "chunk") else 1
        # read first: a TransportError leaves all as it was
        read = [self._read(rec, r, ahead) for r in range(ntasks)] if rec.kind != "shell" else []
        settled: list[Settled] = []
        for f in futures:
            if f.done():
                continue
            values: list[Any] = []
            failed: list[tuple[int, BaseException, bool]] = []  # rank, exception, its own
            for rank, (outcomes, error) in enumerate(read or [(None, None)]):
                where = layout(rec).task_result(rank)
                try:
                    values.append(self._value(rec, f, outcomes, error, where, ahead))
                except Unreachable:
                    raise  # the job's files could not be read: nothing changes, try later
                except BaseException as e:  # the job's own exception, re-raised here  # noqa: BLE001
                    failed.append((rank, e, outcomes is not None))
            if not failed:
                settled.append((f, values[0], None, values if ntasks > 1 else None))
            else:  # the lowest rank that raised, else the lowest that left nothing
                rank, exc, _ = min(failed, key=lambda x: (not x[2], x[0]))
                settled.append((f, None, _in_task(exc, rank, ntasks), None))
        return settled

    def _value(
        self,
        rec: JobRecord,
        f: JobFuture,
        outcomes: list[bytes] | None,
        outcome_error: Exception | None,
        where: str,
        ahead: ReadAhead,
    ) -> Any:
        """``f``'s value from its job's outcomes (read from ``where``), or raise."""
        if rec.kind == "shell":
            if rec.state is JobState.COMPLETED or (
                rec.state is JobState.FAILED and rec.exit_code is not None and not rec.signal
            ):
                result = ShellResult(
                    rec.exit_code or 0,
                    self.read_output(rec, "stdout", ahead),
                    self.read_output(rec, "stderr", ahead),
                )
                if result.returncode != 0 and f.check:
                    raise self.failure(
                        rec, f"shell job {rec.name} exited with code {rec.exit_code}"
                    )
                return result
            raise self.failure(rec)
        if outcome_error is not None:
            raise outcome_error
        index = f.index or 0
        if outcomes is not None and index < len(outcomes):
            return pl.outcome_value(outcomes[index], where)
        if rec.state is JobState.COMPLETED:
            raise self.failure(rec, f"job {rec.name} ({rec.key}) ended but left no result file")
        raise self.failure(rec)

    def failure(self, rec: JobRecord, message: str | None = None) -> JobFailed:
        """The exception of a job that failed, with the tail of its stderr."""
        if message is None:
            message = f"job {rec.name} ({rec.key}, id {rec.job_id}) ended {rec.state.value}"
            details = []
            if rec.exit_code is not None:
                details.append(f"exit code {rec.exit_code}")
            if rec.signal:
                details.append(f"signal {rec.signal}")
            if rec.reason:
                details.append(rec.reason)
            if details:
                message += ": " + "; ".join(details)
        try:
            err = self.transport.read_tail(layout(rec).stderr_target, STDERR_TAIL_BYTES)
        except OSError:  # no tail to show: its stderr names a directory, say
            err = ""
        cls = OutOfMemory if (rec.reason or "").startswith("out of memory") else JobFailed
        return cls(
            message,
            state=rec.state,
            exit_code=rec.exit_code,
            signal=rec.signal,
            reason=rec.reason,
            key=rec.key,
            job_id=rec.job_id,
            stderr_tail="\n".join(err.splitlines()[-20:]),
        )

    def info(self, rec: JobRecord) -> JobInfo:
        """How job ``rec`` ran: its usage file, then the scheduler's accounting."""
        usage: dict[str, float] = {}
        try:
            for line in self.transport.read_bytes(layout(rec).usage).decode().splitlines():
                name, _, value = line.partition(" ")
                usage[name] = float(value)
        except (FileNotFoundError, ValueError):
            pass
        acct = self.driver.accounting(rec) if rec.state.finished else None
        wall = usage.get("wall_s")
        if wall is None and rec.started and rec.finished:
            wall = rec.finished - rec.started
        if acct is not None and acct.elapsed is not None:
            wall = acct.elapsed
        cpu = usage["user_s"] + usage["sys_s"] if "user_s" in usage else None
        if cpu is None and acct is not None:  # a shell job: no runner measured it
            cpu = acct.cpu_seconds
        rss = usage["max_rss_kib"] / 1024 if "max_rss_kib" in usage else None
        if acct is not None and acct.max_rss is not None:
            rss = max(rss or 0.0, float(acct.max_rss))
        aborted = (
            rec.state in (JobState.CANCELLED, JobState.TIMEOUT, JobState.LOST)
            or bool(rec.signal)
            or (rec.state is JobState.FAILED and rec.exit_code is None)
        )
        return JobInfo(
            rec.job_id,
            rec.state,
            rec.exit_code,
            rec.signal,
            aborted,
            rec.reason,
            wall,
            cpu,
            rss,
            (acct.nodelist if acct else None)
            or (self.host if rec.backend == "local" and rec.state.started else None),
            tuple(a.get("job_id") for a in rec.attempts),
            self._restarts(rec),
        )

    def _restarts(self, rec: JobRecord) -> int:
        """How many times the job resumed from its checkpoint (its runner's count)."""
        try:
            return len(self.transport.read_bytes(layout(rec).file(RESTARTS)).splitlines())
        except FileNotFoundError:
            return 0
