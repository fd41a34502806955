"""Running each ended job's epilogue once, across every client of a cache.

A client claims an epilogue in the record, runs it in a worker thread and writes its outcome
to the record; the job's futures complete only once the epilogue has settled (see
:mod:`hpcexec.hooks` for the claim, the log and the environment).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable

from . import hooks
from .errors import TransportError
from .layout import EPILOGUE_LOG
from .record import JobRecord
from .store import Store
from .transport.base import Transport

log = logging.getLogger(__name__)


class Epilogues:
    """The epilogues of one client: the ones it runs, and those another client runs."""

    def __init__(
        self, store: Store, transport: Transport, host: str, wake: Callable[[], None]
    ) -> None:
        self.store = store
        self.transport = transport
        self.host = host
        self.wake = wake  # the monitor's: an epilogue's end is a record change
        self._lock = threading.Lock()
        self._wait: set[str] = set()  # keys whose epilogue another client runs
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def waiting(self) -> bool:
        """Whether an epilogue another client runs is being waited for."""
        return bool(self._wait)

    def take_waiting(self) -> set[str]:
        """The keys waited for (to look at again: has the client running them died?)."""
        with self._lock:
            keys, self._wait = self._wait, set()
        return keys

    def settled(self, rec: JobRecord) -> bool:
        """Whether an ended job's futures may complete: it has no epilogue, or its epilogue
        has run (or never will). Starts the epilogue when no client has claimed it."""
        if not rec.epilogue:
            return True
        word = hooks.state_word(rec.epilogue_state)
        if word is None:
            return self._claim(rec)
        if word in hooks.FINAL:
            return True
        if hooks.is_running(self.store.path, rec.key):
            return False  # running in this process; its end is a record change
        claim = hooks.Claim.parse(rec.epilogue_state or "")
        if claim is None or claim.mine() or claim.dead():
            why = hooks.interrupted(claim)
            with self.store.write() as tx:
                cur = tx.get(rec.key)
                if cur is not None and cur.epilogue_state == rec.epilogue_state:
                    tx.update(rec.key, epilogue_state=why)
            log.warning("the epilogue of job %s (%s) was %s", rec.name, rec.key, why)
            return True
        with self._lock:
            self._wait.add(rec.key)  # looked at again while its client works
        return False

    def _claim(self, rec: JobRecord) -> bool:
        """Claim an unclaimed epilogue so no other client runs it too, and start it."""
        with self.store.write() as tx:
            cur = tx.get(rec.key)
            if cur is not None and cur.epilogue and cur.epilogue_state is None:
                tx.update(rec.key, epilogue_state=hooks.claim())
                hooks.running(self.store.path, rec.key, True)
        if cur is None or cur.epilogue_state is not None:  # another client's, or gone
            return cur is None or self.settled(cur)
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix="hpcexec-epilogue"
                )
            pool = self._pool
        pool.submit(self._run, cur)
        return False

    def _run(self, rec: JobRecord) -> None:
        """Run a claimed epilogue (in a worker thread, so the monitor goes on polling), keep
        its output in the job directory and its outcome in the record; the record change
        lets the monitor complete the futures. A failure is logged, never the job's."""
        try:
            env = {
                **hooks.hook_env(rec.key, rec.name or "", rec.jobdir, self.host),
                "HPCEXEC_JOB_ID": rec.job_id or "",
                "HPCEXEC_JOB_STATE": rec.state.value,
                "HPCEXEC_EXIT_CODE": "" if rec.exit_code is None else str(rec.exit_code),
            }
            result, error = hooks.run_logged(rec.epilogue or "", env)
            where = os.path.join(rec.jobdir, EPILOGUE_LOG)
            try:
                self.transport.write_bytes(where, hooks.log_text(result, error))
            except (TransportError, OSError) as e:
                log.warning("cannot keep the epilogue output of %s in %s: %s", rec.key, where, e)
            if result is not None and result.ok:
                state = "done"
            else:
                why = hooks.hook_failure("the epilogue", result, error)
                state = f"failed: {why}"
                log.warning(
                    "job %s (%s): %s; its output is in %s (the job's result stands)",
                    rec.name,
                    rec.key,
                    why,
                    where,
                )
            with self.store.write() as tx:
                tx.update(rec.key, epilogue_state=state)
        except Exception:
            log.exception("running the epilogue of %s failed", rec.key)
        finally:
            hooks.running(self.store.path, rec.key, False)
            self.wake()

    def shutdown(self) -> None:
        """Wait for the epilogues this client runs."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
