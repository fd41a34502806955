"""Scheduler commands through the transport: rate-limited, counted, and the accounting asked."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Generic, TypeVar

from .backends.base import JobStatus, SchedulerBackend
from .errors import TransportError
from .record import JobRecord
from .transport.base import CommandResult, Transport

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 60.0  # seconds a scheduler command may take before its fate is unknown
T = TypeVar("T")


BURST = 3  # calls that may go at once after a quiet moment (a submit, then its status)


class RateLimit:
    """At most ``per_second`` calls per second on average, a token bucket of :data:`BURST`:
    a few calls after a quiet moment go at once (a lone job's submit and first status are
    not spaced out), a steady stream is spread evenly."""

    def __init__(self, per_second: float, burst: int = BURST) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.burst = burst
        self._due = 0.0  # when the calls so far would have ended, one per interval
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._due = max(self._due, now) + self.interval
            delay = self._due - now - self.burst * self.interval
        if delay > 0:
            time.sleep(delay)


class Fact(Generic[T]):
    """Something the scheduler is asked once: the first caller asks, a caller meanwhile
    waits for that answer, later ones get it (a failure that raises is asked again)."""

    def __init__(self, ask: Callable[[], T]) -> None:
        self._ask = ask
        self._lock = threading.Lock()
        self._value: T | None = None
        self.known = False

    def get(self) -> T:
        with self._lock:
            if not self.known:
                self._value = self._ask()
                self.known = True
            return self._value  # type: ignore[return-value]  # set with known

    def ask_ahead(self) -> None:
        """Ask in a thread of its own, unless known already; :meth:`get` waits for it."""
        if not self.known:
            threading.Thread(target=self._get_quietly, name="hpcexec-ask", daemon=True).start()

    def _get_quietly(self) -> None:
        try:
            self.get()
        except Exception:  # whoever needs it asks again and is told
            log.debug("asking ahead failed", exc_info=True)


class SchedulerCommands:
    """Runs one backend's commands on one transport, each after the rate limit; ``calls``
    counts them by command name; ``timeout``: seconds each may take."""

    def __init__(
        self, transport: Transport, backend: SchedulerBackend, calls_per_second: float
    ) -> None:
        self.transport = transport
        self.backend = backend
        self.limit = RateLimit(calls_per_second)
        self.calls: dict[str, int] = defaultdict(int)  # command name -> times run
        self._max_array = Fact(self._ask_max_array)
        self._lowered: int | None = None  # the most elements of an array the scheduler took
        self._submit_limit = Fact(self._ask_submit_limit)
        self.timeout = COMMAND_TIMEOUT

    def run(
        self, argv: list[str], input: str | None = None, *, query: bool = False
    ) -> CommandResult:
        """Run a scheduler command; ``query``: it changes nothing, so it may be repeated
        after a dropped connection."""
        self.limit.wait()
        self.calls[argv[0]] += 1
        return self.transport.run(argv, input=input, timeout=self.timeout, idempotent=query)

    def max_array(self) -> int:
        """The most elements of one array the scheduler takes (asked once)."""
        most = self._max_array.get()
        return min(most, self._lowered) if self._lowered is not None else most

    def _ask_max_array(self) -> int:
        argv = self.backend.max_array_argv()
        found = None
        if argv:
            try:
                r = self.run(argv, query=True)
                found = self.backend.parse_max_array(r.stdout) if r.ok else None
            except TransportError:
                found = None
        return found or self.backend.default_max_array

    def lower_max_array(self, size: int) -> None:
        """The scheduler refused an array as too large: at most ``size`` elements from now."""
        self._lowered = max(1, min(size, self.max_array()))

    def submit_limit(self) -> str | None:
        """What the scheduler's accounting printed of its limits on queued jobs
        (:meth:`SchedulerBackend.submit_limit_argv`, asked once); None where the backend
        has no such query or it failed."""
        return self._submit_limit.get()

    def _ask_submit_limit(self) -> str | None:
        argv = self.backend.submit_limit_argv()
        if not argv:
            return None
        try:
            out = self.run(argv, query=True)
        except TransportError:
            return None
        return out.stdout if out.ok else None

    def ask_ahead(self) -> None:
        """Ask, side by side and in the background, what a submission of many jobs needs
        (the most elements of an array, the limit on queued jobs), so it waits for neither
        (over a slow link each is a round trip; ``sacctmgr`` alone takes about 0.3 s)."""
        self._max_array.ask_ahead()
        self._submit_limit.ask_ahead()

    def finished_in_accounting(self, recs: list[JobRecord]) -> dict[str, JobStatus]:
        """What accounting says of these finished jobs, in one call ({} if it cannot)."""
        argv = self.backend.accounting_argv([r.job_id for r in recs if r.job_id])
        if not argv:
            return {}
        try:
            r = self.run(argv, query=True)
        except TransportError:
            return {}
        found = self.backend.parse_accounting(r.stdout) if r.ok else {}
        return {k: v for k, v in found.items() if v.state.finished}

    def accounting(self, rec: JobRecord) -> JobStatus | None:
        """What the scheduler's accounting says of a finished job (None if nothing)."""
        argv = self.backend.accounting_argv([rec.job_id]) if rec.job_id else None
        if not argv:
            return None
        try:
            r = self.run(argv, query=True)
        except TransportError:
            return None
        return self.backend.parse_accounting(r.stdout).get(rec.job_id or "") if r.ok else None

    def look_up(self, job_id: str) -> tuple[JobStatus | None, dict[str, str]]:
        """What the scheduler says of job ``job_id``: its status (the queue's, else
        accounting's; None if neither knows it) and its name and files where it tells them
        (:meth:`SchedulerBackend.describe_argv`)."""
        out = self.run(self.backend.status_argv([job_id]), query=True)
        status = self.backend.parse_status(out.stdout, out.stderr, out.returncode).get(job_id)
        if status is None:
            argv = self.backend.accounting_argv([job_id])
            if argv:
                acct = self.run(argv, query=True)
                status = self.backend.parse_accounting(acct.stdout).get(job_id) if acct.ok else None
        described: dict[str, str] = {}
        argv = self.backend.describe_argv(job_id)
        if argv and status is not None:
            about = self.run(argv, query=True)
            described = self.backend.parse_described(about.stdout) if about.ok else {}
        return status, described
