"""PBS Professional / OpenPBS: ``qsub``, ``qstat -x -f -F json``, ``qdel``, ``qhold``, ``qrls``.

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

from ..errors import BackendError, SchedulerOutputError, SubmitError
from ..resources import Resources, format_time, local_time
from ..script import ScriptParts
from ..states import JobState
from .base import (
    NATIVE, JobStatus, Rule, SchedulerBackend, SubmitSpec, array_range, error_option,
    hold_option, mail_options, option, rule,
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
JOB_ID = re.compile(r"^(\d+)(\[\d*\])?((?:\.\S+)?)$")
_JOB_KEY_LINE = re.compile(r'^\s*"(\d+(?:\[\d*\])?(?:\.[^"\s]*)?)"\s*:\s*\{', re.M)


# -- helpers shared with the Torque backend --------------------------------------------------
def job_name(name: str) -> str:
    """A name PBS accepts: printable, no whitespace, starting with a letter (older PBS
    and Torque versions want a letter first)."""
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)[:64]
    return safe if safe[:1].isalpha() else ("j" + safe)[:64]


def pbs_path(path: str) -> str:
    """A path for ``-o``/``-e`` in a ``#PBS`` line: qsub reads those lines itself (no shell),
    so only whitespace needs quoting."""
    if '"' in path:
        raise BackendError(f"PBS output paths cannot contain double quotes: {path!r}")
    return f'"{path}"' if re.search(r"\s", path) else path


def parse_pbs_submit(out: str, command: str = "qsub") -> str:
    for line in out.splitlines():
        if JOB_ID.match(line.strip()):
            return line.strip()
    raise SubmitError(f"{command} printed no job id: {out.strip()[:200]!r}")


def pbs_element_id(array_id: str, index: int) -> str:
    m = JOB_ID.match(array_id)
    if not m:
        raise BackendError(f"not a PBS array id: {array_id!r}")
    return f"{m[1]}[{index}]{m[3]}"


def array_of(job_id: str) -> str:
    """``12[3].srv`` -> ``12[].srv`` (the array as a whole); other ids unchanged."""
    m = JOB_ID.match(job_id)
    return f"{m[1]}[]{m[3]}" if m and m[2] and m[2] != "[]" else job_id


def query_ids(job_ids: list[str]) -> list[str]:
    """Whole arrays instead of their elements (one entry answers all, with ``-t``)."""
    wanted = {array_of(j) for j in job_ids}
    return sorted(wanted, key=lambda j: (int(JOB_ID.match(j)[1]) if JOB_ID.match(j) else 0, j))


def aliases(job_id: str) -> list[str]:
    """The id, and the same without the server suffix (``qsub`` may print either)."""
    m = JOB_ID.match(job_id)
    return [job_id, f"{m[1]}{m[2] or ''}"] if m and m[3] else [job_id]


def check_native(res: Resources, prefix: str, scheduler: str) -> None:
    for raw in res.native:
        if raw.startswith("#") and not raw.startswith(prefix + " "):
            raise BackendError(f"native directive {raw!r} is not a {scheduler} directive: give "
                               f"'{prefix} ...' lines or bare options such as '-l place=excl'")


def nodefile_prologue() -> str:
    """Shell lines putting the distinct hosts of ``$PBS_NODEFILE`` into ``_hx_nodes``."""
    return ('_hx_nodes=; if [ -r "${PBS_NODEFILE:-}" ]; then while read -r _hx_n; do '
            'case ",$_hx_nodes," in *",$_hx_n,"*) ;; '
            '*) [ -n "$_hx_n" ] && _hx_nodes="${_hx_nodes:+$_hx_nodes,}$_hx_n";; esac; '
            'done < "$PBS_NODEFILE"; fi')


def hosts(exec_host: str | None) -> str | None:
    """``node1/0*2+node2/1`` -> ``node1,node2``."""
    if not exec_host:
        return None
    seen: list[str] = []
    for part in exec_host.split("+"):
        host = part.strip("() ").split("/")[0].split(":")[0]
        if host and host not in seen:
            seen.append(host)
    return ",".join(seen) or None


def seconds(text: object) -> float | None:
    """``HH:MM:SS`` (hours may exceed 24) in seconds."""
    if not isinstance(text, str) or not re.match(r"^\d+(:\d+){0,2}$", text):
        return None
    total = 0.0
    for part in text.split(":"):
        total = total * 60 + int(part)
    return total


def mib(text: object) -> int | None:
    """PBS sizes such as ``35844kb``, ``4gb`` in MiB."""
    m = re.match(r"^(\d+)(b|kb|mb|gb|tb|w|kw|mw|gw)?$", str(text or "").strip().lower())
    if not m:
        return None
    factor = {None: 1 / 1024**2, "b": 1 / 1024**2, "kb": 1 / 1024, "mb": 1, "gb": 1024,
              "tb": 1024**2, "w": 8 / 1024**2, "kw": 8 / 1024, "mw": 8, "gw": 8 * 1024}[m[2]]
    return max(1, round(int(m[1]) * factor))


def finished_status(code: int | None, *, scheduler: str, comment: str | None = None,
                    codes: dict[int, tuple[JobState, str]] = EXIT_CODES,
                    **extra: object) -> JobStatus:
    """A finished PBS job (F/X, or Torque's C) from its exit status."""
    if code is None:
        return JobStatus(JobState.CANCELLED,
                         reason=comment or "ended without an exit status (deleted before it ran)",
                         **extra)  # type: ignore[arg-type]
    if code in codes:
        state, why = codes[code]
        return JobStatus(state, exit_code=code, reason=why, **extra)  # type: ignore[arg-type]
    signal = code - 256 if code >= 256 else None  # killed by the scheduler (qdel, a limit)
    if comment and "exceeded resource walltime" in comment:
        return JobStatus(JobState.TIMEOUT, exit_code=code, signal=signal,
                         reason="walltime exceeded", **extra)  # type: ignore[arg-type]
    if code < 0:
        return JobStatus(JobState.FAILED, exit_code=code,
                         reason=f"{scheduler} could not run the job (exit status {code})",
                         **extra)  # type: ignore[arg-type]
    if signal is not None:
        return JobStatus(JobState.FAILED, exit_code=code, signal=signal,
                         reason=f"killed by signal {signal}", **extra)  # type: ignore[arg-type]
    state = JobState.COMPLETED if code == 0 else JobState.FAILED
    return JobStatus(state, exit_code=code, **extra)  # type: ignore[arg-type]


def pbs_select(res: Resources, *, gpus_key: str) -> str | None:
    if not any((res.nodes, res.ppn, res.threads, res.mem, res.gpus)):
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
    if res.gpus:
        chunk.append(f"{gpus_key}={res.gpus}")
    return ":".join(chunk)


def pbs_when(text: str) -> str:
    """A canonical time as ``qsub -a`` reads it: ``CCYYMMDDhhmm.SS``, local time of the
    submitting machine (POSIX qsub, -a date_time)."""
    return local_time(text).strftime("%Y%m%d%H%M.%S")


#: qsub -m letters (POSIX qsub; PBS Pro and Torque): b (begins), e (ends), a (aborted)
MAIL_LETTERS = {"begin": "b", "end": "e", "fail": "a"}


#: the rules PBS Pro and Torque write alike (POSIX qsub, which both follow):
#: ``-M``/``-m`` mail, ``-a`` begin, ``-j oe`` (standard error merged into standard output)
PBS_DRMAA_RULES: tuple[Rule, ...] = (
    mail_options("-M ", "-m ", MAIL_LETTERS),
    option("begin", lambda v: f"-a {pbs_when(v)}"),
    option("join_output", lambda v: "-j oe"),
)
PBS_HOLD = hold_option("-h")
#: keys neither PBS Pro nor Torque can express
PBS_REFUSED = {
    "deadline": "PBS has no start deadline; leave deadline unset and bound the run with "
                "time, or use backend='slurm'",
    "stdin": "PBS qsub has no input file option; read the file in the job instead (e.g. "
             "'exec < FILE' at the top of a shell body, or open(FILE) in a function)",
}


@rule("nodes", "ppn", "threads", "mem", "gpus")
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
        raise BackendError("PBS Pro arrays need at least two elements (-J 0-1); "
                           "submit a single job instead")
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
class PbsControl:
    """The submit and job control commands, and the job ids, PBS Pro and Torque share."""

    def submit_argv(self, spec: SubmitSpec) -> list[str]:
        return ["qsub", spec.script]

    def parse_submit(self, out: str) -> str:
        return parse_pbs_submit(out)

    def element_id(self, array_id: str, index: int) -> str:
        return pbs_element_id(array_id, index)

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        return ["qdel", *job_ids]

    def hold_argv(self, job_ids: list[str]) -> list[str]:
        return ["qhold", *job_ids]

    def release_argv(self, job_ids: list[str]) -> list[str]:
        return ["qrls", *job_ids]

    def suspend_argv(self, job_ids: list[str]) -> list[str]:
        return ["qsig", "-s", "suspend", *job_ids]

    def resume_argv(self, job_ids: list[str]) -> list[str]:
        return ["qsig", "-s", "resume", *job_ids]


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

    def check(self, res: Resources) -> None:
        self.check_refused(res)
        check_native(res, "#PBS", "PBS Pro")

    def script_parts(self, res: Resources, *, name: str, jobdir: str, stdout: str,
                     stderr: str, workdir: str) -> ScriptParts:
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
    def _status(job: dict) -> JobStatus | None:
        state = STATES.get(str(job.get("job_state", "")))
        if state is None:
            return None
        used = job.get("resources_used") if isinstance(job.get("resources_used"), dict) else {}
        extra = dict(nodelist=hosts(job.get("exec_host")), elapsed=seconds(used.get("walltime")),
                     max_rss=mib(used.get("mem")))
        comment = job.get("comment")
        if state is JobState.COMPLETED:
            code = job.get("Exit_status")
            return finished_status(code if isinstance(code, int) else None, scheduler="PBS",
                                   comment=comment, **extra)
        if state is JobState.LOST:
            return JobStatus(state, reason="moved to another PBS server", **extra)
        return JobStatus(state, reason=comment or None, **extra)  # type: ignore[arg-type]

    def max_array_argv(self) -> list[str] | None:
        return ["qmgr", "-c", "list server"]

    def parse_max_array(self, out: str) -> int | None:
        m = re.search(r"^\s*max_array_size\s*=\s*(\d+)", out, re.M)
        return int(m[1]) if m else None


def _jobs(out: str) -> dict[str, dict]:
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
    found: dict[str, dict] = {}
    keys = list(_JOB_KEY_LINE.finditer(out))
    if not keys:  # not one job in it: not qstat's JSON at all
        raise SchedulerOutputError(f"qstat printed unreadable JSON: {out.strip()[:200]!r}")
    for m, nxt in zip(keys, keys[1:] + [None]):
        block = out[m.end() : nxt.start() if nxt else len(out)]
        job: dict = {}
        for key, pattern in (("job_state", r'"job_state"\s*:\s*"(\w)"'),
                             ("Exit_status", r'"Exit_status"\s*:\s*(-?\d+)'),
                             ("exec_host", r'"exec_host"\s*:\s*"([^"]*)"'),
                             ("comment", r'"comment"\s*:\s*"([^"]*)"')):
            v = re.search(pattern, block)
            if v:
                job[key] = int(v[1]) if key == "Exit_status" else v[1]
        found[m[1]] = job
    return found
