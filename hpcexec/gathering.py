"""Consecutive ``submit`` calls gathered into shared submissions (a group commit).

A ``submit`` builds its job (pickling the call, computing its key, checking what can be
checked at once) in the caller's thread and hands it here; one background thread submits
what was handed over, in order, each run of consecutive jobs with the same options and
submitter as **one** submission (one cache lookup, one staging exchange, one store
transaction). While it submits one batch the next gathers, so a loop of submits costs about
what a ``map`` costs, and a lone ``submit`` waits for no window: the thread starts at once.

Whoever needs a gathered job to exist (its future's ``result()``, ``record``, ``cancel()``,
a ``map`` or ``shutdown`` after it) calls :meth:`Gathering.flush`, which submits everything
handed over so far in the caller's thread. A submission that fails fails its futures with
the error (the caller of ``submit`` has returned). The thread is not a daemon and ends once
nothing waits, so an interpreter that exits right after a ``submit`` still submits it.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


class _Settles(Protocol):
    def settle(self, result: Any = None, exc: BaseException | None = None) -> None: ...


class GatheredJob(Protocol):
    """What is handed over (a :class:`hpcexec.jobspec.Job`): its key and its futures."""

    @property
    def key(self) -> str: ...
    @property
    def futures(self) -> Sequence[_Settles]: ...


SubmitFn = Callable[[Any, Any], None]
"""Submits a list of jobs with their options (:meth:`hpcexec.submission.Submitter.submit`)."""

LINGER = 0.005  # seconds the thread waits for the next submit before it ends
MOST = 32  # jobs per shared submission: jobs already written start while more are written


@dataclass
class _Handed:
    """Jobs handed over together, with their options and the submitter that takes them."""

    jobs: list[GatheredJob]
    opts: object  # job options; hand-overs with the same object join
    submit: SubmitFn


class Gathering:
    """The jobs of one session waiting to be submitted, and the thread that submits them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: list[_Handed] = []
        self._keys: collections.Counter[str] = collections.Counter()  # waiting or in flight
        self._busy = threading.Lock()  # one submission at a time, thread or caller
        self._thread: threading.Thread | None = None

    def add(self, jobs: Sequence[GatheredJob], opts: object, submit: SubmitFn) -> None:
        """Hand ``jobs`` over, to be submitted by ``submit(jobs, opts)`` soon, in order."""
        with self._cond:
            self._waiting.append(_Handed(list(jobs), opts, submit))
            self._keys.update(j.key for j in jobs)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hpcexec-submit")
                self._thread.start()
            self._cond.notify()

    def now(self, jobs: Sequence[GatheredJob], opts: object, submit: SubmitFn) -> None:
        """Submit ``jobs`` here, after everything handed over before; errors are raised."""
        with self._busy:
            self._submit_waiting()
            submit(jobs, opts)

    def waits(self, key: str) -> bool:
        """Whether job ``key`` was handed over and is not submitted yet."""
        with self._cond:
            return self._keys[key] > 0

    def flush(self) -> None:
        """Submit everything handed over so far, in this thread (or wait while the
        background thread does)."""
        with self._busy:
            self._submit_waiting()

    def flush_for(self, key: str) -> None:
        """:meth:`flush` if job ``key`` waits."""
        if self.waits(key):
            self.flush()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._waiting:
                    self._cond.wait(LINGER)
                if not self._waiting:
                    self._thread = None
                    return
            with self._busy:
                self._submit_waiting()

    def _submit_waiting(self) -> None:
        """Submit what waits, each run of consecutive hand-overs with the same options and
        submitter as one submission (the caller holds ``_busy``)."""
        with self._cond:
            taken, self._waiting = self._waiting, []
        for part in _runs(taken):
            try:
                part.submit(part.jobs, part.opts)
            except Exception as e:  # noqa: BLE001 - the caller has returned: the futures carry it
                log.warning("a gathered submission of %d job(s) failed: %s", len(part.jobs), e)
                for j in part.jobs:
                    for f in j.futures:
                        f.settle(exc=e)
            finally:
                with self._cond:
                    self._keys.subtract(j.key for j in part.jobs)
                    self._keys += collections.Counter()  # drop the zeros


def _runs(handed: list[_Handed]) -> list[_Handed]:
    """``handed`` with consecutive hand-overs of the same options and submitter joined."""
    out: list[_Handed] = []
    for h in handed:
        last = out[-1] if out else None
        if last is not None and last.opts is h.opts and last.submit == h.submit:
            last.jobs = last.jobs + h.jobs
        else:
            out.append(_Handed(list(h.jobs), h.opts, h.submit))
    return [
        _Handed(part.jobs[i : i + MOST], part.opts, part.submit)
        for part in out
        for i in range(0, len(part.jobs), MOST)
    ]
