"""The local backend: no scheduler, jobs are detached processes on this machine.

Pure functions only; :mod:`hpcexec.localqueue` does the I/O with them.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..errors import BackendError
from ..layout import EXITCODE, under
from ..resources import Resources
from ..script import ScriptParts
from .base import Backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcStat:
    state: str  # one letter: R, S, D, Z, T, ...
    start: int  # clock ticks since boot


def parse_proc_stat(text: str) -> ProcStat | None:
    """Parse ``/proc/<pid>/stat``; the command name may hold spaces and parentheses."""
    end = text.rfind(")")
    if end < 0:
        return None
    rest = text[end + 2 :].split()
    if len(rest) < 20:
        return None
    return ProcStat(state=rest[0], start=int(rest[19]))


def make_job_id(pid: int, start: int) -> str:
    return f"{pid}:{start}"


def split_job_id(job_id: str) -> tuple[int, int]:
    pid, _, start = job_id.partition(":")
    return int(pid), int(start or 0)


def plan_starts(
    pending: Iterable[tuple[str, int] | tuple[str, int, int]], free_cores: int, free_gpus: int = 0
) -> list[str]:
    """Which pending jobs (key, cores[, GPUs]), in queue order, to start now: each that fits
    the free cores and GPUs, so smaller jobs backfill behind a large one that must wait."""
    chosen = []
    for key, cores, *gpus in pending:
        need = gpus[0] if gpus else 0
        if cores <= free_cores and need <= free_gpus:
            chosen.append(key)
            free_cores -= cores
            free_gpus -= need
        if free_cores <= 0:
            break
    return chosen


def hand_out_gpus(needs: Sequence[int], free: Sequence[str]) -> list[tuple[str, ...]]:
    """Distinct GPUs for each of the jobs needing ``needs`` of them, from ``free`` in order
    (:func:`plan_starts` chose jobs that fit)."""
    out, at = [], 0
    for n in needs:
        out.append(tuple(free[at : at + n]))
        at += n
    return out


def stdin_line(path: str, jobdir: str) -> str:
    """A job script line reading standard input from ``path``; when it cannot be read, the
    job ends failed with the reason in its exit-code file."""
    q = shlex.quote
    why = q(f"cannot read the stdin file {path}; the job did not run")
    return (
        f"exec < {q(path)} || {{ printf '%s\\n%s\\n' 1 {why} > {q(jobdir)}/.{EXITCODE}.tmp "
        f"&& mv -f {q(jobdir)}/.{EXITCODE}.tmp {q(jobdir)}/{EXITCODE}; exit 1; }}"
    )


class LocalBackend(Backend):
    name = "local"
    poll_min = 0.02
    poll_max = 1.0
    refused: ClassVar[dict[str, str]] = {
        "soft_time": "there is no scheduler to warn the job on this machine; time is the "
        "limit the local queue applies (SIGTERM at it), or use backend='sge' (s_rt)",
        "mail": "there is no scheduler to send mail on this machine; leave mail unset on the "
        "local backend (a shell body can send its own, e.g. '... && mail -s done ADDRESS "
        "< /dev/null'), or use a scheduler backend",
    }
    #: keys the local queue itself applies (with ``stdin`` in the job script), as
    #: ``hpcexec resources`` describes them
    applied: ClassVar[dict[str, str]] = {
        "name": "the record's name",
        "time": "SIGTERM at the limit, SIGKILL 10 s later; the job ends timeout",
        "nodes": "one machine: nodes above 1 are refused",
        "ppn": "threads x ppn cores are reserved in the core accounting",
        "threads": "threads x ppn cores are reserved in the core accounting",
        "stdout": "the job's standard output file",
        "stderr": "the job's standard error file",
        "env": "set in the job's environment",
        "gpus": "that many of the local GPUs (local_gpus, $HPCEXEC_LOCAL_GPUS or nvidia-smi "
        "-L), its own while it runs, in CUDA_VISIBLE_DEVICES; every task sees them all",
        "gpus_per_task": "gpus_per_task x ppn of the local GPUs, its own while it runs; each "
        "task sees its share in CUDA_VISIBLE_DEVICES",
        "workdir": "the job's working directory",
        "begin": "the local queue starts the job no earlier",
        "deadline": "not started by then: cancelled; still running then: stopped as at the "
        "walltime, ending timeout",
        "join_output": "standard error is opened on the standard output file",
    }

    def __init__(
        self, total_cores: int, hostname: str = "localhost", gpu_ids: Sequence[str] = ()
    ) -> None:
        self.total_cores = total_cores
        self.hostname = hostname
        #: the GPUs the queue hands out (ids as CUDA_VISIBLE_DEVICES takes them)
        self.gpu_ids = tuple(gpu_ids)

    def task_launcher(self, res: Resources, python: str) -> list[str]:
        """hpcexec's own launcher (:mod:`hpcexec.launch`): ``ppn`` processes here, each
        with its own ``gpus_per_task`` of the job's GPUs."""
        share = ["--gpus-per-task", str(res.gpus_per_task)] if res.gpus_per_task else []
        return [python, "-m", "hpcexec.launch", str(res.ntasks), *share, "--"]

    def gpu_env(self, gpu_ids: Sequence[str]) -> dict[str, str]:
        """``CUDA_VISIBLE_DEVICES`` of a job holding ``gpu_ids``: those, or empty for a job
        holding none, so that it stays off the pool's devices; nothing without a pool."""
        return {"CUDA_VISIBLE_DEVICES": ",".join(gpu_ids)} if self.gpu_ids else {}

    def check(self, res: Resources) -> None:
        self.check_refused(res)
        if (res.nodes or 1) > 1:
            raise BackendError(
                f"the local backend runs on one machine and cannot give nodes={res.nodes}; "
                "drop `nodes` or use a scheduler backend such as backend='slurm'"
            )

    def fits(self, res: Resources) -> None:
        """Refuse a job this machine's cores or GPU pool can never hold (asked when a job is
        submitted; a preview such as ``job_script`` renders whatever it is given)."""
        if res.cores > self.total_cores:
            raise BackendError(
                f"this job asks for {res.cores} cores (threads x ppn) but this machine has "
                f"{self.total_cores}; it could never start. Ask for at most {self.total_cores}."
            )
        if res.gpus_per_node > len(self.gpu_ids):
            raise BackendError(
                f"this job asks for {res.gpus_per_node} GPUs but the local backend has "
                f"{len(self.gpu_ids)} ({', '.join(self.gpu_ids) or 'none'}); it could never "
                "start. Ask for fewer, or name the GPUs: the local_gpus setting or "
                "HPCEXEC_LOCAL_GPUS (e.g. '0,1'; by default what `nvidia-smi -L` lists)."
            )

    def ignored(self, res: Resources) -> list[str]:
        """Resources that mean nothing without a scheduler (accepted so a workflow moves
        between backends unchanged, and logged)."""
        return [k for k in ("queue", "account", "native", "mem", "mpi") if getattr(res, k)]

    def script_parts(
        self, res: Resources, *, name: str, jobdir: str, stdout: str, stderr: str, workdir: str
    ) -> ScriptParts:
        prologue = "read -ra _hpcexec_stat < /proc/$$/stat 2>/dev/null"
        if res.stdin:
            prologue += "\n" + stdin_line(under(workdir, res.stdin), jobdir)
        return ScriptParts(
            directives=[],
            prologue=prologue,
            job_id_expr='"$$:${_hpcexec_stat[21]:-0}"',
            nodelist_expr=shlex.quote(self.hostname),
            array_index_expr='"${HPCEXEC_ARRAY_INDEX:-}"',
        )

    def job_env(self, name: str, workdir: str, array_index: str) -> dict[str, str]:
        """The core variables a warm-started job gets (its script would export the same;
        ``HPCEXEC_JOB_ID`` is set by the job itself)."""
        return {
            "HPCEXEC_JOB_NAME": name,
            "HPCEXEC_WORKDIR": workdir,
            "HPCEXEC_SUBMIT_HOST": self.hostname,
            "HPCEXEC_NODELIST": self.hostname,
            "HPCEXEC_ARRAY_INDEX": array_index,
        }

    def spawn_argv(self, script: str) -> Sequence[str]:
        return ["/bin/bash", script]
