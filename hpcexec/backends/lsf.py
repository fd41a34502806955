"""The IBM Spectrum LSF dialect: ``bsub < script``, ``bjobs -o ... -json``, ``bkill``,
``bstop``, ``bresume``, rendered and parsed. Pure functions only.

Job ids are numbers; an array element is ``<id>[<i>]`` where LSF's index ``i`` is 1-based
(``-J "name[1-n]"``, ``LSB_JOBINDEX``, ``%I``). hpcexec's element index is 0-based, so
element ``k`` is ``<id>[k+1]``, the job computes ``LSB_JOBINDEX - 1``, and
``array_index_base = 1`` tells the driver that ``%I`` names element ``k`` ``k+1``.

Output: LSF writes a job report (``Sender: LSF System ...``) at the top of every ``-o``
file, and by default copies the file into place only when the job ends. So that a shell
job's stdout is its own output, the job script redirects its own stdout and stderr to the
job's files (the prologue of :meth:`LsfBackend.script_parts`), and LSF's ``-o``/``-e`` go to
``lsf.<id>[.<index>].out|err`` beside the submission script, where the report lands.

``bsub`` reads ``#BSUB`` lines only from a script given on standard input, hence
``submit_stdin``.

What LSF cannot express exactly: walltime is whole minutes (rounded up); threads are
reserved as slots (``ppn x threads`` per host, ``-n`` = nodes x that), not with the
site-dependent ``affinity[]``; memory is reserved per host (``rusage[mem=]``, LSF's default
``RESOURCE_RESERVE_PER_TASK=N``) and limited with ``-M`` to the job's total.
"""

from __future__ import annotations

import json
import math
import os
import re
from datetime import datetime, timedelta
from typing import Any

from ..errors import BackendError, SchedulerOutputError, SubmitError
from ..resources import Resources
from ..resourcevalues import local_time
from ..script import ScriptParts
from ..states import JobState
from .base import (
    NATIVE,
    JobStatus,
    Rule,
    SchedulerBackend,
    SubmitSpec,
    Usage,
    hold_option,
    option,
    own_output,
    rule,
    stdin_option,
    warning_option,
)

#: LSF job states (bjobs man page, "Description") onto the common states; EXIT is refined
#: by EXIT_REASON (REASONS) and DONE means exit code 0.
STATES: dict[str, JobState] = {
    "PEND": JobState.PENDING,
    "WAIT": JobState.PENDING,  # chunk job member waiting for its turn
    "PROV": JobState.PENDING,  # host being provisioned
    "PSUSP": JobState.HELD,  # suspended while pending (bsub -H, bstop)
    "RUN": JobState.RUNNING,
    "UNKWN": JobState.RUNNING,  # mbatchd lost contact with the host; it may still run
    "ZOMBI": JobState.RUNNING,  # killed, the kill not yet confirmed; becomes EXIT
    "USUSP": JobState.SUSPENDED,
    "SSUSP": JobState.SUSPENDED,
    "DONE": JobState.COMPLETED,
    "EXIT": JobState.FAILED,
}
#: EXIT_REASON prefixes (TERM_* codes, lsbatch.h) that say more than "failed"
REASONS: dict[str, tuple[JobState, str]] = {
    "TERM_RUNLIMIT": (JobState.TIMEOUT, "walltime exceeded"),
    "TERM_DEADLINE": (JobState.TIMEOUT, "deadline reached"),
    "TERM_MEMLIMIT": (JobState.FAILED, "out of memory"),
    "TERM_SWAP": (JobState.FAILED, "swap limit exceeded"),
    "TERM_CPULIMIT": (JobState.FAILED, "cpu time limit exceeded"),
    "TERM_PREEMPT": (JobState.FAILED, "preempted"),
    "TERM_OWNER": (JobState.CANCELLED, "killed by its owner"),
    "TERM_FORCE_OWNER": (JobState.CANCELLED, "killed by its owner"),
    "TERM_ADMIN": (JobState.CANCELLED, "killed by an administrator"),
    "TERM_FORCE_ADMIN": (JobState.CANCELLED, "killed by an administrator"),
}
FIELDS = "jobid jobindex stat exit_code exit_reason pend_reason exec_host run_time max_mem"
GONE = re.compile(r"is not found|No (?:unfinished |matching )?job found", re.I)
_SUBMITTED = re.compile(r"Job <(\d+)> is submitted to (?:default )?queue")
_ELEMENT = re.compile(r"^(\d+)\[(\d+)\]$")


def _name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)[:64]
    return safe or "job"


def _dq(text: str) -> str:
    """Double quotes for a ``#BSUB`` value (LSF reads ``#BSUB`` lines like a command line)."""
    if '"' in text:
        raise BackendError(f"LSF paths and names cannot contain double quotes: {text!r}")
    return f'"{text}"'


def _mib(text: str) -> int | None:
    """bjobs MAX_MEM such as ``5.2 Gbytes``, ``35 Mbytes`` in MiB."""
    m = re.match(r"^([\d.]+)\s*([KMGT])?", text.strip(), re.I)
    if not m:
        return None
    factor = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2, None: 1}[(m[2] or "M").upper()]
    return max(1, round(float(m[1]) * factor))


def _seconds(text: str) -> float | None:
    """bjobs RUN_TIME: ``16038 second(s)``, or ``HH:MM:SS`` with ``-hms``."""
    m = re.match(r"^(\d+) second", text.strip())
    if m:
        return float(m[1])
    if re.match(r"^\d+:\d\d:\d\d$", text.strip()):
        h, mnt, s = (int(x) for x in text.strip().split(":"))
        return float(h * 3600 + mnt * 60 + s)
    return None


def _hosts(text: str) -> str | None:
    """EXEC_HOST ``4*hostA:2*hostB`` or ``hostA:hostA`` -> ``hostA,hostB``."""
    seen: list[str] = []
    for part in re.split(r"[:\s]+", text or ""):
        host = part.split("*")[-1]
        if host and host not in seen:
            seen.append(host)
    return ",".join(seen) or None


def record_status(rec: dict[str, Any]) -> JobStatus | None:
    """One ``bjobs -json`` record (keys are the ``-o`` fields, upper case)."""
    state = STATES.get(str(rec.get("STAT", "")))
    if state is None:
        return None
    extra = Usage(
        nodelist=_hosts(str(rec.get("EXEC_HOST") or "")),
        elapsed=_seconds(str(rec.get("RUN_TIME") or "")),
        max_rss=_mib(str(rec.get("MAX_MEM") or "")),
    )
    text = str(rec.get("EXIT_CODE") or "").strip()
    code = int(text) if re.match(r"^-?\d+$", text) else None
    if state is JobState.COMPLETED:
        return JobStatus(state, exit_code=0, **extra)
    if state is JobState.FAILED:
        why = str(rec.get("EXIT_REASON") or "").strip()
        for prefix, (final, reason) in REASONS.items():
            if why.startswith(prefix):
                return JobStatus(final, exit_code=code, reason=reason, **extra)
        return JobStatus(state, exit_code=code, reason=why or None, **extra)
    pending = str(rec.get("PEND_REASON") or "").strip().rstrip(";") or None
    if pending and "never satisfied" in pending.lower():
        pending = "DependencyNeverSatisfied"  # the driver cancels such a job
    return JobStatus(state, reason=pending, **extra)


def _when(text: str, *, round_up: bool) -> str:
    """A canonical time as ``-b`` and ``-t`` read it: ``year:month:day:hour:minute`` in the
    local time of the submitting machine. LSF counts whole minutes: a begin is rounded up
    (never earlier), a deadline down (never later)."""
    t = local_time(text)
    if round_up and t.second:
        t += timedelta(minutes=1)
    return datetime.strftime(t, "%Y:%m:%d:%H:%M")


def _report(spec: SubmitSpec) -> str:
    """Where LSF writes its job report: beside the submission script."""
    report = os.path.join(os.path.dirname(spec.script), "lsf.%J")
    return report + ".%I" if spec.array_size is not None else report


@rule("name", "array")
def _name_array(b: object, spec: SubmitSpec) -> list[str]:
    if spec.array_size is None:
        return [f"-J {_dq(_name(spec.name))}"]
    limit = f"%{spec.array_limit}" if spec.array_limit else ""
    return [f"-J {_dq(f'{_name(spec.name)}[1-{spec.array_size}]{limit}')}"]


def _hours_minutes(seconds: int) -> str:
    """bsub's ``[hour:]minute``, rounded up to the minute."""
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


@rule("time")
def _walltime(b: object, spec: SubmitSpec) -> list[str]:
    return [f"-W {_hours_minutes(spec.res.time)}"] if spec.res.time else []


@rule("soft_time")
def _estimate(b: object, spec: SubmitSpec) -> list[str]:
    """The estimated run time (bsub -We): used for scheduling, not enforced."""
    return [f"-We {_hours_minutes(spec.res.soft_time)}"] if spec.res.soft_time else []


@rule("nodes", "ppn", "threads")
def _slots(b: object, spec: SubmitSpec) -> list[str]:
    res = spec.res
    if not (res.nodes or res.ppn or res.threads):
        return []
    per_host = res.cores
    span = f"ptile={per_host}" if res.nodes or res.ppn else "hosts=1"
    return [f"-n {(res.nodes or 1) * per_host}", f'-R "span[{span}]"']


@rule("mem", "nodes")
def _mem(b: object, spec: SubmitSpec) -> list[str]:
    res = spec.res
    if not res.mem:
        return []
    return [f'-R "rusage[mem={res.mem}MB]"', f"-M {res.mem * (res.nodes or 1)}MB"]


@rule("mail")
def _mail(b: object, spec: SubmitSpec) -> list[str]:
    m = spec.res.mail
    if not m:
        return []
    d = [f"-u {_dq(m.to)}"]
    if "begin" in m.on:
        d.append("-B")  # mail when the job is dispatched
    if "end" in m.on:
        d.append("-N")  # the job report by mail when the job finishes, however it ends
    elif "fail" in m.on:
        d.append("-Ne")  # ... only when it exits in EXIT state (not with -N)
    return d


#: LSF's dialect (IBM Spectrum LSF 10.1 bsub reference): in directive order. The job
#: writes its own output (see the module doc); ``join_output`` is applied there, and LSF's
#: own report then goes to ``-o`` only ("-o without -e: standard error in the output file").
RULES: tuple[Rule, ...] = (
    _name_array,
    Rule((), lambda b, spec: [f"-o {_dq(_report(spec) + '.out')}"]),
    Rule(
        ("join_output",),
        lambda b, spec: [] if spec.res.join_output else [f"-e {_dq(_report(spec) + '.err')}"],
    ),
    option("queue", lambda v: f"-q {v}"),
    option("account", lambda v: f"-P {v}"),
    _walltime,
    _estimate,
    _slots,
    _mem,
    option("gpus", lambda v: f'-gpu "num={v}"'),  # per host, LSF's default
    option("gpus_per_task", lambda v: f'-gpu "num={v}/task"'),
    hold_option("-H"),
    warning_option(lambda s: ["-wa USR2", f"-wt {-(-s // 60)}"]),  # -wt in minutes
    Rule(
        ("after",),
        lambda b, spec: (
            ["-w " + _dq(" && ".join(f"done({j})" for j in spec.after))] if spec.after else []
        ),
    ),
    _mail,
    option("begin", lambda v: f"-b {_when(v, round_up=True)}"),
    option("deadline", lambda v: f"-t {_when(v, round_up=False)}"),
    stdin_option(lambda path: f"-i {_dq(path)}"),
    NATIVE,
)


class LsfBackend(SchedulerBackend):
    name = "lsf"
    commands = ("bsub", "bjobs")
    default_max_array = 1000  # MAX_JOB_ARRAY_SIZE's default
    array_index_pattern = "%I"
    array_index_expr = "$((LSB_JOBINDEX - 1))"
    array_index_base = 1  # %I of the first element
    submit_stdin = True
    # MAX_PEND_JOBS: bsub itself retries unless LSB_NTRIES bounds its attempts
    submit_limits = (r"(pending job threshold reached)",)
    prefix = "#BSUB"
    rules = RULES

    def task_launcher(self, res: Resources, python: str) -> list[str]:
        """``blaunch``, LSF's own: with no host named it runs one task per slot of the
        job, nodes x ppn slots; with ``threads`` the slots count threads too, so that is
        refused."""
        if (res.threads or 1) > 1:
            raise BackendError(
                "LSF's blaunch starts one task per slot, and hpcexec reserves threads as "
                f"slots: a callable with threads={res.threads} would run in "
                f"{res.ntasks * (res.threads or 1)} tasks, not {res.ntasks}. Drop threads "
                "(set OMP_NUM_THREADS through env), or use submit_shell with your own launcher"
            )
        return ["blaunch"]

    def check(self, res: Resources) -> None:
        for raw in res.native:
            if raw.startswith("#") and not raw.startswith("#BSUB "):
                raise BackendError(
                    f"native directive {raw!r} is not an LSF directive: give "
                    "'#BSUB ...' lines or bare options such as '-x'"
                )

    def script_parts(
        self, res: Resources, *, name: str, jobdir: str, stdout: str, stderr: str, workdir: str
    ) -> ScriptParts:
        return ScriptParts(
            directives=[],  # given per submission by directives()
            prologue="\n".join(
                [
                    # LSF's -o file starts with its report: the job writes its own output
                    own_output(stdout, stdout if res.join_output else stderr, workdir),
                    'if [ "${LSB_JOBINDEX:-0}" != 0 ]; then '
                    '_hx_id="${LSB_JOBID}[${LSB_JOBINDEX}]"; _hx_ix=$((LSB_JOBINDEX - 1)); '
                    'else _hx_id="${LSB_JOBID:-}"; _hx_ix=; fi',
                    '_hx_nodes=; read -ra _hx_h <<< "${LSB_MCPU_HOSTS:-}"; '
                    "for ((_hx_i = 0; _hx_i < ${#_hx_h[@]}; _hx_i += 2)); do "
                    '_hx_nodes="${_hx_nodes:+$_hx_nodes,}${_hx_h[_hx_i]}"; done',
                ]
            ),
            job_id_expr='"$_hx_id"',
            nodelist_expr='"$_hx_nodes"',
            array_index_expr='"$_hx_ix"',
        )

    def submit_argv(self, spec: SubmitSpec) -> list[str]:
        return ["bsub"]  # the script goes on standard input (submit_stdin)

    def parse_submit(self, out: str) -> str:
        m = _SUBMITTED.search(out)
        if not m:
            raise SubmitError(f"bsub printed no job id: {out.strip()[:200]!r}")
        return m[1]

    def element_id(self, array_id: str, index: int) -> str:
        return f"{array_id}[{index + 1}]"

    def status_argv(self, job_ids: list[str]) -> list[str]:
        ids = sorted({j.split("[")[0] for j in job_ids}, key=lambda j: (len(j), j))
        return ["bjobs", "-a", "-o", FIELDS, "-json", *ids]

    def parse_status(self, out: str, err: str, returncode: int) -> dict[str, JobStatus]:
        problems = [line for line in err.splitlines() if line.strip() and not GONE.search(line)]
        if returncode != 0 and (problems or not (err.strip() or out.strip())):
            why = problems[0] if problems else "no output"
            raise SchedulerOutputError(f"bjobs failed ({returncode}): {why.strip()[:300]}")
        if not out.strip():
            return {}
        try:
            records = json.loads(out, strict=False).get("RECORDS", [])
        except (ValueError, AttributeError):
            raise SchedulerOutputError(
                f"bjobs printed unreadable JSON: {out.strip()[:200]!r}"
            ) from None
        found: dict[str, JobStatus] = {}
        for rec in records:
            if not isinstance(rec, dict) or "ERROR" in rec or not rec.get("JOBID"):
                continue  # "Job <id> is not found"
            st = record_status(rec)
            if st is None:
                continue
            index = str(rec.get("JOBINDEX") or "0")
            job_id = rec["JOBID"] if index == "0" else f"{rec['JOBID']}[{index}]"
            found[job_id] = st
        return found

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        return ["bkill", *job_ids]

    def hold_argv(self, job_ids: list[str]) -> list[str]:
        return ["bstop", *job_ids]

    def release_argv(self, job_ids: list[str]) -> list[str]:
        return ["bresume", *job_ids]

    def suspend_argv(self, job_ids: list[str]) -> list[str]:
        return ["bstop", *job_ids]

    def resume_argv(self, job_ids: list[str]) -> list[str]:
        return ["bresume", *job_ids]

    def max_array_argv(self) -> list[str] | None:
        return ["bparams", "-a"]

    def parse_max_array(self, out: str) -> int | None:
        m = re.search(r"^\s*MAX_JOB_ARRAY_SIZE\s*=\s*(\d+)", out, re.M)
        return int(m[1]) if m else None
