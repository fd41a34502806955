"""SpecCluster's scheduler for HPCCluster: dask's, told by a plugin when a worker leaves."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.scheduler import Scheduler

import hpcexec

log = logging.getLogger(__name__)

REFRESH_AFTER_LEAVING = (0.2, 0.8, 1.0, 2.0, 4.0)  # pauses between looks at the jobs


def scheduler_spec(
    executor: hpcexec.Executor,
    protocol: str | None,
    interface: str | None,
    scheduler_options: dict[str, Any],
) -> dict[str, Any]:
    """SpecCluster's scheduler: dask's, told by a plugin when a worker leaves."""
    options = {
        "dashboard_address": ":8787",
        "protocol": protocol,
        **({"interface": interface} if interface else {}),
        **scheduler_options,
    }
    options["plugins"] = [*options.get("plugins", ()), _WorkerLeft(executor)]
    return {"cls": Scheduler, "options": options}


class _WorkerLeft(SchedulerPlugin):
    """Has the executor look at its jobs at once when a worker leaves the scheduler, so a
    worker job that ended (cancelled, killed) is seen now, not at the next poll, which backs
    off to tens of seconds while nothing changes."""

    name = "hpcexec-worker-left"

    def __init__(self, executor: hpcexec.Executor) -> None:
        self.executor = executor

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        threading.Thread(target=self._refresh, name="hpcexec-refresh", daemon=True).start()

    def _refresh(self) -> None:
        # The worker's connection closes before the scheduler records the job's end: look
        # a few times over the next seconds.
        for delay in REFRESH_AFTER_LEAVING:
            time.sleep(delay)
            try:
                self.executor.refresh()
            except Exception:  # a closed executor, a failing command: the poll comes later
                log.debug("refresh after a worker left failed", exc_info=True)
                return
