"""One Dask worker as an hpcexec job: SpecCluster's ProcessInterface over a JobFuture."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distributed.deploy.spec import ProcessInterface

import hpcexec
from hpcexec.adapters.dask_workerspec import WorkerJobSpec
from hpcexec.states import JobState

log = logging.getLogger(__name__)

TERMINATE_AGAIN = 5.0  # seconds after which a worker job still running is terminated again


def _end(future: Any) -> None:
    """Cancel a job still queued, terminate a running one, and terminate it once more if
    it still runs after a while: a worker that gets SIGTERM while it closes itself (retired
    by Adaptive) hangs until a second signal, which dask-worker takes as "exit now"."""
    if future.done() or future.cancel():
        return
    future.terminate()
    again = threading.Timer(TERMINATE_AGAIN, _terminate_again, (future,))
    again.daemon = True
    again.start()


def _terminate_again(future: Any) -> None:
    try:
        if not future.done():
            future.terminate()
    except Exception:  # the executor was shut down meanwhile: the job is left to its walltime
        log.warning("could not terminate worker job %s again", future.key, exc_info=True)


class HPCJob(ProcessInterface):
    """One Dask worker job, submitted through an :class:`hpcexec.Executor`.

    ``on_end``, if given, is called with this job in the event loop that started it once
    the job has ended (finished, failed, cancelled or lost); it is how a cluster hears of
    a worker job ending. ``history``, if given, is a list this job appends itself to when
    it is submitted.
    """

    def __init__(
        self,
        scheduler: str | None = None,
        name: str | None = None,
        *,
        executor: hpcexec.Executor,
        spec: WorkerJobSpec,
        job_name: str = "dask-worker",
        log_directory: str | None = None,
        on_end: Callable[[HPCJob], None] | None = None,
        history: list[HPCJob] | None = None,
        cores: int | None = None,
        memory: int | None = None,
    ) -> None:
        super().__init__(scheduler=scheduler, name=name)
        self.scheduler_address = scheduler
        self.name = name
        self.executor = executor
        self.spec = spec
        self.job_name = job_name
        self.log_directory = log_directory
        self.future: hpcexec.JobFuture | None = None
        self._on_end = on_end
        self._history = history
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def job_id(self) -> str | None:
        return self.future.job_id if self.future is not None else None

    @property
    def state(self) -> JobState | None:
        """The job's state from its record (None before it was submitted)."""
        return self.future.state if self.future is not None else None

    def _options(self) -> dict[str, Any]:
        key = f"dask-{uuid.uuid4().hex}"
        # Each worker gets its own array element: a long-lived worker must never be run by
        # another worker's element at the end of that one's walltime.
        options: dict[str, Any] = {"key": key, "name": self.job_name, "reuse_slots": False}
        if self.log_directory:
            base = Path(self.log_directory).absolute() / f"{self.job_name}-{self.name}-{key[5:13]}"
            options.update(stdout=f"{base}.out", stderr=f"{base}.err")
        return options

    async def start(self) -> None:
        if self.scheduler_address is None:
            raise RuntimeError(
                f"worker {self.name}: started before its scheduler's address was known"
            )
        body = self.spec.body(self.scheduler_address, str(self.name))
        view = self.executor.options(**self._options())
        self._loop = asyncio.get_running_loop()
        self.future = await asyncio.to_thread(view.submit_shell, body, check=False)
        if self._history is not None:
            self._history.append(self)
        log.info("worker %s: job %s submitted", self.name, self.future.key)
        self.future.add_done_callback(self._job_ended)
        await super().start()

    def _job_ended(self, future: Any) -> None:  # the executor's monitor thread
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._tell_cluster)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _tell_cluster(self) -> None:
        self._event_finished.set()
        if self._on_end is not None:
            self._on_end(self)

    async def close(self) -> None:
        if self.future is not None and not self.future.done():
            await asyncio.to_thread(_end, self.future)
        await super().close()

    def output(self) -> str:
        """The job's stdout and stderr so far."""
        if self.future is None:
            return ""
        return f"--- stdout ---\n{self.future.stdout()}--- stderr ---\n{self.future.stderr()}"


__all__ = ["HPCJob"]
