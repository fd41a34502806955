"""Starting one chosen local job in its own process, warm from the fork server or from its script.

The local queue (:mod:`hpcexec.localqueue`) decides what starts and records it; this module
checks the job's directory may be run, adopts a job a dead client already started (never
running it twice), and starts the process: a Python job through the fork server
(:mod:`hpcexec.forkserver`) with the request it needs, anything else, or any job when the
server is unavailable, by running its script detached.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from . import trust
from .backends.local import LocalBackend, make_job_id, parse_proc_stat
from .errors import TransportError, UntrustedPath
from .layout import SCRIPT, JobLayout, cannot_start
from .record import INDEX_STEP, JobRecord, task_index
from .recovery import Submitted, note_job_ids, started_as
from .resources import task_count
from .states import JobState
from .transport.base import Transport

log = logging.getLogger(__name__)


def _warm(rec: JobRecord) -> bool:
    """Whether the fork server starts the job: a Python job, not one with stdin (its job
    script opens it) nor a multi-task job (its job script starts the tasks' launcher)."""
    res = rec.resources
    return (
        rec.kind != "shell"
        and bool(res.get("python"))
        and not res.get("stdin")
        and task_count(res) == 1
    )


class Starter:
    """Starts chosen local jobs, one at a time, each in its own process: from the fork server
    where the job can (:func:`_warm`), else from its script."""

    def __init__(
        self,
        transport: Transport,
        backend: LocalBackend,
        key_file: str,
        watch: Callable[[int, str], str],
    ) -> None:
        self.transport = transport
        self.backend = backend
        self.key_file = key_file  # the one key its Python jobs trust
        self.watch = watch  # (pid, job id) of a process just started -> its job id

    def start(self, rec: JobRecord, gpus: tuple[str, ...]) -> dict[str, Any]:
        """Start one chosen job with ``gpus``; the record's new fields (running and the GPUs
        it holds, or failed and why)."""
        untrusted = self._untrusted(rec)
        if untrusted:
            log.error("job %s was not started: %s", rec.key, untrusted)
            return dict(
                state=JobState.FAILED, finished=time.time(), reason=f"not started: {untrusted}"
            )
        first = started_as(self.transport, rec.jobdir)
        if first is not None:
            # A client died between starting this job and recording it, or the record was
            # rebuilt from the job's directory: adopt, never rerun.
            # The GPUs it was given then are not known: it is counted with these.
            log.warning("job %s was already started as %s; reattaching", rec.key, first)
            return dict(
                state=JobState.RUNNING,
                job_id=first or None,
                started=rec.started or time.time(),
                gpu_ids=",".join(gpus) or None,
            )
        try:
            job_id = self._spawn(rec, gpus)
        except (OSError, TransportError) as e:  # this job cannot start; the others can
            return self._not_started(rec, e)
        log.debug("started local job %s as %s (GPUs: %s)", rec.key, job_id, gpus)
        return dict(
            state=JobState.RUNNING,
            job_id=job_id,
            started=time.time(),
            gpu_ids=",".join(gpus) or None,
        )

    def _spawn(self, rec: JobRecord, gpus: tuple[str, ...]) -> str:
        """Start the job's process (warm through the fork server where it can); its job id,
        kept in the job's directory too before the record has it. Its ``CUDA_VISIBLE_DEVICES``
        names ``gpus``, unless its ``env`` resource sets the variable itself."""
        lay = JobLayout.of(rec.jobdir, rec.resources)
        lay.check_start()
        res = rec.resources
        out, err = lay.stdout, lay.stderr_target
        index = task_index(rec, rec.array_index)
        gpu_env = self.backend.gpu_env(gpus)
        pid = None
        if _warm(rec):
            pid = self.transport.spawn_warm(
                res["python"],
                {
                    "jobdir": rec.jobdir,
                    "key": self.key_file,
                    "cwd": lay.workdir,
                    "stdout": out,
                    "stderr": err,
                    # a job holding GPUs gets a server that imports nothing ahead of it
                    "preload": not gpus,
                    "env": {
                        **os.environ,
                        **self.backend.job_env(rec.name or "", lay.workdir, index),
                        "HPCEXEC_INDEX_STEP": str(rec.resources.get(INDEX_STEP, 1)),
                        **gpu_env,
                        **res.get("env", {}),
                    },
                },
            )
        warm = pid is not None
        if pid is None:
            pid = self.transport.spawn_detached(
                self.backend.spawn_argv(lay.script),
                cwd=lay.workdir,
                stdout=out,
                stderr=err,
                env={"HPCEXEC_ARRAY_INDEX": index, **gpu_env},  # the script's env= comes after
            )
        text = self.transport.process_stat(pid)
        st = parse_proc_stat(text) if text else None
        job_id = make_job_id(pid, st.start if st else 0)
        if not warm:  # before the record has it; a fork server's child writes its own
            note_job_ids(self.transport, {rec.jobdir: Submitted(job_id)})
        return self.watch(pid, job_id)

    def _not_started(self, rec: JobRecord, e: OSError | TransportError) -> dict[str, Any]:
        cause = e if isinstance(e, OSError) else e.__cause__
        reason = cannot_start(cause) if isinstance(cause, OSError) else f"cannot start: {e}"
        log.warning("job %s (%s) %s", rec.name, rec.key, reason)
        return dict(state=JobState.FAILED, finished=time.time(), reason=reason)

    def _untrusted(self, rec: JobRecord) -> str | None:
        """Why a job's directory or script must not be run (another user's, or writable by
        others), or None."""
        try:
            trust.check_job_dir(rec.jobdir, SCRIPT, files=self.transport)
        except FileNotFoundError:
            return None  # starting it fails, and says why
        except UntrustedPath as e:
            return str(e)
        return None
