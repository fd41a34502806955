"""Starting one chosen local job in its own process, warm from the fork server or from its script.

The local queue (:mod:`hpcexec.localqueue`) decides what starts and records it; this module
checks the job's directory may be run, adopts a job a dead client already started (never
running it twice), and starts the process: a Python job through the fork server
(:mod:`hpcexec.forkserver`) with the request it needs, anything else, or any job when the
server is unavailable, by running its script detached.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import trust
from .backends.local import LocalBackend, make_job_id, parse_proc_stat
from .errors import TransportError, UntrustedPath
from .lanerun import LANE, LANE_ENV, LANE_FILE, claim_name
from .layout import SCRIPT, JobLayout, cannot_start
from .record import INDEX_STEP, JobRecord, task_index
from .recovery import Submitted, note_job_ids, started_as
from .resources import task_count
from .states import JobState
from .transport.base import Transport

log = logging.getLogger(__name__)


def warm_startable(rec: JobRecord) -> bool:
    """Whether the fork server starts the job: a Python job, not one with stdin (its job
    script opens it) nor a multi-task job (its job script starts the tasks' launcher)."""
    res = rec.resources
    return (
        rec.kind != "shell"
        and bool(res.get("python"))
        and not res.get("stdin")
        and task_count(res) == 1
    )


def _follower(first: dict[str, Any], request: dict[str, Any], claim: str) -> dict[str, Any]:
    """A job of a lane as :mod:`hpcexec.lanerun` reads it: its files, working directory,
    the environment values that differ from those of the lane's ``first`` job, and the
    name of its ``claim`` file."""
    env = {k: v for k, v in request["env"].items() if first["env"].get(k) != v}
    keep = ("jobdir", "stdout", "stderr", "cwd")
    return {**{k: request[k] for k in keep}, "env": env, "claim": claim}


class Starter:
    """Starts chosen local jobs, one at a time, each in its own process: from the fork server
    where the job can (:func:`warm_startable`), else from its script."""

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

    def start(
        self, rec: JobRecord, gpus: tuple[str, ...], lane: Sequence[JobRecord] = ()
    ) -> tuple[dict[str, Any], list[JobRecord]]:
        """Start one chosen job with ``gpus``, and hand the fork server the jobs of its
        ``lane`` (:mod:`hpcexec.locallanes`) to start after it; the record's new fields
        (running and the GPUs it holds, or failed and why), and the jobs handed over."""
        untrusted = self._untrusted(rec)
        if untrusted:
            log.error("job %s was not started: %s", rec.key, untrusted)
            return dict(
                state=JobState.FAILED, finished=time.time(), reason=f"not started: {untrusted}"
            ), []
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
            ), []
        try:
            job_id, handed = self._spawn(rec, gpus, lane)
        except (OSError, TransportError) as e:  # this job cannot start; the others can
            return self._not_started(rec, e), []
        log.debug("started local job %s as %s (GPUs: %s)", rec.key, job_id, gpus)
        return dict(
            state=JobState.RUNNING,
            job_id=job_id,
            started=time.time(),
            gpu_ids=",".join(gpus) or None,
        ), handed

    def _spawn(
        self, rec: JobRecord, gpus: tuple[str, ...], lane: Sequence[JobRecord]
    ) -> tuple[str, list[JobRecord]]:
        """Start the job's process (warm through the fork server where it can, with what of
        its lane may follow it); its job id, kept in the job's directory too before the
        record has it, and the jobs handed over to follow it. Its ``CUDA_VISIBLE_DEVICES``
        names ``gpus``, unless its ``env`` resource sets the variable itself."""
        lay = JobLayout.of(rec.jobdir, rec.resources)
        lay.check_start()
        gpu_env = self.backend.gpu_env(gpus)
        pid, then = None, []
        if warm_startable(rec):
            request = self._warm_request(rec, gpus)
            then = [r for r in lane if self._may_follow(r)]
            if then:  # they run in its process after it (hpcexec.lanerun)
                lane_file = os.path.join(rec.jobdir, LANE_FILE)
                claim = claim_name(rec.resources[LANE])
                follow = [_follower(request, self._warm_request(r, ()), claim) for r in then]
                self.transport.write_bytes(lane_file, json.dumps(follow).encode())
                request["env"][LANE_ENV] = lane_file
            pid = self.transport.spawn_warm(rec.resources["python"], request)
        warm = pid is not None
        if pid is None:
            pid = self.transport.spawn_detached(
                self.backend.spawn_argv(lay.script),
                cwd=lay.workdir,
                stdout=lay.stdout,
                stderr=lay.stderr_target,
                # the script's env= comes after
                env={"HPCEXEC_ARRAY_INDEX": task_index(rec, rec.array_index), **gpu_env},
            )
        text = self.transport.process_stat(pid)
        st = parse_proc_stat(text) if text else None
        job_id = make_job_id(pid, st.start if st else 0)
        if not warm:  # before the record has it; a fork server's child writes its own
            note_job_ids(self.transport, {rec.jobdir: Submitted(job_id)})
        return self.watch(pid, job_id), then if warm else []

    def _warm_request(self, rec: JobRecord, gpus: tuple[str, ...]) -> dict[str, Any]:
        """What the fork server is asked to start the job (:mod:`hpcexec.forkserver`)."""
        lay = JobLayout.of(rec.jobdir, rec.resources)
        res = rec.resources
        return {
            "jobdir": rec.jobdir,
            "key": self.key_file,
            "cwd": lay.workdir,
            "stdout": lay.stdout,
            "stderr": lay.stderr_target,
            # a job holding GPUs gets a server that imports nothing ahead of it
            "preload": not gpus,
            "env": {
                **os.environ,
                **self.backend.job_env(
                    rec.name or "", lay.workdir, task_index(rec, rec.array_index)
                ),
                "HPCEXEC_INDEX_STEP": str(res.get(INDEX_STEP, 1)),
                **self.backend.gpu_env(gpus),
                **res.get("env", {}),
            },
        }

    def _may_follow(self, rec: JobRecord) -> bool:
        """Whether a queued job may go in a lane as it is: its directory trusted and ready,
        never started before (else the queue adopts or fails it as any other)."""
        try:
            JobLayout.of(rec.jobdir, rec.resources).check_start()
        except OSError:
            return False
        return self._untrusted(rec) is None and started_as(self.transport, rec.jobdir) is None

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
