"""The PBS Professional / OpenPBS dialect: ``qsub``, ``qstat -x -f -F json``, ``qdel``,
``qhold``, ``qrls``, rendered and parsed.

Pure functions only. Job ids are ``<seq>.<server>`` (or a bare ``<seq>`` where the server
hides its suffix); an array is ``<seq>[].<server>`` and its elements ``<seq>[<i>].<server>``,
indexed 0..n-1 here (``-J 0-<n-1>``), so ``PBS_ARRAY_INDEX`` is the element index itself.

Finished jobs are read from ``qstat -x`` (job history): state ``F`` (``X`` for an element)
with ``Exit_status``. Without ``job_history_enable`` on the server a finished job is just
"Unknown Job Id": the driver then judges it by the exit-code file its script wrote.

What PBS Pro cannot express, and what is done instead:

* a dependency on one element of an array: PBS accepts only the whole array, so the
  dependency is on ``<seq>[].<server>`` (the job waits for every element; the job script's
  own dependency guard checks the element it needs);
* an array of one element (``-J`` needs two indices): the driver never submits one, and
  :meth:`PbsProBackend.directives` refuses it;
* ``%limit`` on ``-J`` needs PBS Pro 2020.1 / OpenPBS 20 or later.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import BackendError, SchedulerOutputError
from ..resources import Resources
from ..resourcevalues import format_time
from ..script import ScriptParts
from ..states import JobState
from .base import (
    NATIVE,
    JobStatus,
    Rule,
    SchedulerBackend,
    SubmitSpec,
    Usage,
    array_range,
    error_option,
    option,
    rule,
)
from .pbsfamily import (
    PBS_DRMAA_RULES,
    PBS_HOLD,
    PBS_REFUSED,
    PbsControl,
    aliases,
    array_of,
    check_native,
    finished_status,
    hosts,
    job_name,
    mib,
    nodefile_prologue,
    pbs_path,
    query_ids,
    seconds,
)

#: PBS Pro job_state letters (Reference Guide, "Job States") onto the common states;
#: F and X (finished element) are refined by Exit_status in :func:`finished_status`.
STATES: dict[str, JobState] = {
    "Q": JobState.PENDING,  # queued
    "W": JobState.PENDING,  # waiting for its execution time (or a failed stage-in)
    "T": JobState.PENDING,  # in transit to another server
    "H": JobState.HELD,
    "R": JobState.RUNNING,
    "B": JobState.RUNNING,  # array: at least one element has begun
    "E": JobState.RUNNING,  # exiting: files still being staged out
    "S": JobState.SUSPENDED,
    "U": JobState.SUSPENDED,  # cycle-harvesting workstation busy
    "F": JobState.COMPLETED,
    "X": JobState.COMPLETED,  # array element finished (expired)
    "M": JobState.LOST,  # moved to another server: no longer ours to watch
}
#: negative Exit_status values PBS sets itself (JOB_EXEC_KILL_*, OpenPBS 20+)
EXIT_CODES: dict[int, tuple[JobState, str]] = {
    -29: (JobState.TIMEOUT, "walltime exceeded"),
    -28: (JobState.FAILED, "cpu time limit exceeded"),
    -27: (JobState.FAILED, "memory limit exceeded"),
    -26: (JobState.FAILED, "virtual memory limit exceeded"),
    -25: (JobState.FAILED, "ncpus limit exceeded"),
    -24: (JobState.FAILED, "ncpus limit exceeded"),
}
#: stderr lines that only say an id is not (or no longer) in the queue
GONE = re.compile(r"Unknown Job Id|Job has finished|History job ID", re.I)
_JOB_KEY_LINE = re.compile(r'^\s*"(\d+(?:\[\d*\])?(?:\.[^"\s]*)?)"\s*:\s*\{', re.M)


def pbs_select(res: Resources, *, gpus_key: str) -> str | None:
    if not any((res.nodes, res.ppn, res.threads, res.mem, res.gpus_per_node)):
        return None
    chunk = [str(res.nodes or 1)]
    if res.ppn or res.threads:
        chunk.append(f"ncpus={res.cores}")
    if res.ppn:
        chunk.append(f"mpiprocs={res.ppn}")
    if res.threads:
        chunk.append(f"ompthreads={res.threads}")
    if res.mem:
        chunk.append(f"mem={res.mem}mb")
    if res.gpus_per_node:  # per chunk (node): gpus, or gpus_per_task x ppn
        chunk.append(f"{gpus_key}={res.gpus_per_node}")
    return ":".join(chunk)


@rule("nodes", "ppn", "threads", "mem", "gpus", "gpus_per_task")
def _select(b: object, spec: SubmitSpec) -> list[str]:
    res = spec.res
    select = pbs_select(res, gpus_key="ngpus")
    if not select:
        return []
    d = [f"-l select={select}"]
    if (res.nodes or 1) > 1:
        d.append("-l place=scatter")  # one chunk per node, as 'nodes' means
    return d


@rule("array")
def _array(b: object, spec: SubmitSpec) -> list[str]:
    if spec.array_size is None:
        return []
    if spec.array_size < 2:
        raise BackendError(
            "PBS Pro arrays need at least two elements (-J 0-1); submit a single job instead"
        )
    return [f"-J {array_range(spec)}"]


@rule("after")
def _after(b: object, spec: SubmitSpec) -> list[str]:
    if not spec.after:
        return []
    # PBS Pro cannot depend on one array element: depend on its whole array.
    after = list(dict.fromkeys(array_of(j) for j in spec.after))
    return ["-W depend=afterok:" + ":".join(after)]


#: PBS Pro's dialect (PBS Professional Reference Guide, qsub): in directive order.
RULES: tuple[Rule, ...] = (
    Rule(("name",), lambda b, spec: [f"-N {job_name(spec.name)}"]),
    Rule(("stdout",), lambda b, spec: [f"-o {pbs_path(spec.stdout)}"]),
    error_option(lambda path: f"-e {pbs_path(path)}"),
    option("queue", lambda v: f"-q {v}"),
    option("account", lambda v: f"-A {v}"),
    _select,
    option("time", lambda v: f"-l walltime={format_time(v)}"),
    _array,
    PBS_HOLD,
    _after,
    *PBS_DRMAA_RULES,
    NATIVE,
)


# -- the backend -------------------------------------------------------------------------------
class PbsProBackend(PbsControl, SchedulerBackend):
    name = "pbspro"
    # pbs_rstat (advance reservations) ships with PBS Pro and OpenPBS, not with Torque: its
    # presence tells the two apart when both answer to qsub/qstat.
    commands = ("qsub", "qstat", "pbs_rstat")
    default_max_array = 1000
    array_index_pattern = "^array_index^"
    array_index_expr = "$PBS_ARRAY_INDEX"
    prefix = "#PBS"
    rules = RULES
    refused = PBS_REFUSED

    def task_launcher(self, res: Resources, python: str) -> list[str]:
        """``mpiexec`` (the MPI's, which reads the job's hosts through PBS's TM
        interface; Torque documents OSC's ``mpiexec``), with the tasks' number."""
        return ["mpiexec", "-n", str(res.ntasks)]

    def check(self, res: Resources) -> None:
        self.check_refused(res)
        check_native(res, "#PBS", "PBS Pro")

    def script_parts(
        self, res: Resources, *, name: str, jobdir: str, stdout: str, stderr: str, workdir: str
    ) -> ScriptParts:
        return ScriptParts(
            directives=[],  # given per submission by directives()
            prologue=nodefile_prologue(),
            job_id_expr='"${PBS_JOBID:-}"',
            nodelist_expr='"$_hx_nodes"',
            array_index_expr='"${PBS_ARRAY_INDEX:-}"',
        )

    def status_argv(self, job_ids: list[str]) -> list[str]:
        return ["qstat", "-x", "-f", "-F", "json", "-t", *query_ids(job_ids)]

    def parse_status(self, out: str, err: str, returncode: int) -> dict[str, JobStatus]:
        problems = [line for line in err.splitlines() if line.strip() and not GONE.search(line)]
        if returncode != 0 and (problems or not (err.strip() or out.strip())):
            why = problems[0] if problems else "no output"
            raise SchedulerOutputError(f"qstat failed ({returncode}): {why.strip()[:300]}")
        found: dict[str, JobStatus] = {}
        for job_id, job in _jobs(out).items():
            st = self._status(job)
            if st is not None and "[]" not in job_id:  # an array as a whole: not asked for
                for alias in aliases(job_id):
                    found.setdefault(alias, st)
        return found

    @staticmethod
    def _status(job: dict[str, Any]) -> JobStatus | None:
        state = STATES.get(str(job.get("job_state", "")))
        if state is None:
            return None
        used = job.get("resources_used")
        if not isinstance(used, dict):
            used = {}
        extra = Usage(
            nodelist=hosts(job.get("exec_host")),
            elapsed=seconds(used.get("walltime")),
            max_rss=mib(used.get("mem")),
        )
        comment = job.get("comment")
        if state is JobState.COMPLETED:
            code = job.get("Exit_status")
            return finished_status(
                code if isinstance(code, int) else None,
                scheduler="PBS",
                comment=comment,
                codes=EXIT_CODES,
                usage=extra,
            )
        if state is JobState.LOST:
            return JobStatus(state, reason="moved to another PBS server", **extra)
        return JobStatus(state, reason=comment or None, **extra)

    def max_array_argv(self) -> list[str] | None:
        return ["qmgr", "-c", "list server"]

    def parse_max_array(self, out: str) -> int | None:
        m = re.search(r"^\s*max_array_size\s*=\s*(\d+)", out, re.M)
        return int(m[1]) if m else None


def _jobs(out: str) -> dict[str, dict[str, Any]]:
    """The ``Jobs`` object of ``qstat -F json``. Some PBS versions print invalid JSON (raw
    control characters or quotes from job environments): then each job's block is scanned
    for the few keys that matter."""
    if not out.strip():
        return {}
    try:
        data = json.loads(out, strict=False)
        jobs = data.get("Jobs", {}) if isinstance(data, dict) else {}
        return jobs if isinstance(jobs, dict) else {}
    except ValueError:
        pass
    found: dict[str, dict[str, Any]] = {}
    keys = list(_JOB_KEY_LINE.finditer(out))
    if not keys:  # not one job in it: not qstat's JSON at all
        raise SchedulerOutputError(f"qstat printed unreadable JSON: {out.strip()[:200]!r}")
    for m, nxt in zip(keys, [*keys[1:], None], strict=True):
        block = out[m.end() : nxt.start() if nxt else len(out)]
        job: dict[str, Any] = {}
        for key, pattern in (
            ("job_state", r'"job_state"\s*:\s*"(\w)"'),
            ("Exit_status", r'"Exit_status"\s*:\s*(-?\d+)'),
            ("exec_host", r'"exec_host"\s*:\s*"([^"]*)"'),
            ("comment", r'"comment"\s*:\s*"([^"]*)"'),
        ):
            v = re.search(pattern, block)
            if v:
                job[key] = int(v[1]) if key == "Exit_status" else v[1]
        found[m[1]] = job
    return found
