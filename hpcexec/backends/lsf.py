"""IBM Spectrum LSF: ``bsub < script``, ``bjobs -o ... -json``, ``bkill``, ``bstop``,
``bresume``. Pure functions only.

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

from ..errors import BackendError, SubmitError, TransportError
from ..resources import Resources
from ..script import ScriptParts
from ..states import JobState
from .base import JobStatus, SchedulerBackend, SubmitSpec
from .torque import own_output

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


def record_status(rec: dict) -> JobStatus | None:
    """One ``bjobs -json`` record (keys are the ``-o`` fields, upper case)."""
    state = STATES.get(str(rec.get("STAT", "")))
    if state is None:
        return None
    extra = dict(nodelist=_hosts(str(rec.get("EXEC_HOST") or "")),
                 elapsed=_seconds(str(rec.get("RUN_TIME") or "")),
                 max_rss=_mib(str(rec.get("MAX_MEM") or "")))
    text = str(rec.get("EXIT_CODE") or "").strip()
    code = int(text) if re.match(r"^-?\d+$", text) else None
    if state is JobState.COMPLETED:
        return JobStatus(state, exit_code=0, **extra)  # type: ignore[arg-type]
    if state is JobState.FAILED:
        why = str(rec.get("EXIT_REASON") or "").strip()
        for prefix, (final, reason) in REASONS.items():
            if why.startswith(prefix):
                return JobStatus(final, exit_code=code, reason=reason, **extra)  # type: ignore[arg-type]
        return JobStatus(state, exit_code=code, reason=why or None, **extra)  # type: ignore[arg-type]
    why = str(rec.get("PEND_REASON") or "").strip().rstrip(";") or None
    if why and "never satisfied" in why.lower():
        why = "DependencyNeverSatisfied"  # the driver cancels such a job
    return JobStatus(state, reason=why, **extra)  # type: ignore[arg-type]


class LsfBackend(SchedulerBackend):
    name = "lsf"
    commands = ("bsub", "bjobs")
    default_max_array = 1000  # MAX_JOB_ARRAY_SIZE's default
    array_index_pattern = "%I"
    array_index_expr = "$((LSB_JOBINDEX - 1))"
    array_index_base = 1  # %I of the first element
    submit_stdin = True

    def check(self, res: Resources) -> None:
        for raw in res.native:
            if raw.startswith("#") and not raw.startswith("#BSUB "):
                raise BackendError(f"native directive {raw!r} is not an LSF directive: give "
                                   "'#BSUB ...' lines or bare options such as '-x'")

    def script_parts(self, res: Resources, *, name: str, jobdir: str, stdout: str,
                     stderr: str, workdir: str) -> ScriptParts:
        return ScriptParts(
            directives=[],  # given per submission by directives()
            prologue="\n".join([
                own_output(stdout, stderr, workdir),  # LSF's -o file starts with its report
                'if [ "${LSB_JOBINDEX:-0}" != 0 ]; then '
                '_hx_id="${LSB_JOBID}[${LSB_JOBINDEX}]"; _hx_ix=$((LSB_JOBINDEX - 1)); '
                'else _hx_id="${LSB_JOBID:-}"; _hx_ix=; fi',
                '_hx_nodes=; read -ra _hx_h <<< "${LSB_MCPU_HOSTS:-}"; '
                'for ((_hx_i = 0; _hx_i < ${#_hx_h[@]}; _hx_i += 2)); do '
                '_hx_nodes="${_hx_nodes:+$_hx_nodes,}${_hx_h[_hx_i]}"; done',
            ]),
            job_id_expr='"$_hx_id"',
            nodelist_expr='"$_hx_nodes"',
            array_index_expr='"$_hx_ix"',
        )

    def directives(self, spec: SubmitSpec) -> list[str]:
        res = spec.res
        report = os.path.join(os.path.dirname(spec.script), "lsf.%J")
        if spec.array_size is not None:
            limit = f"%{spec.array_limit}" if spec.array_limit else ""
            d = [f"-J {_dq(f'{_name(spec.name)}[1-{spec.array_size}]{limit}')}"]
            report += ".%I"
        else:
            d = [f"-J {_dq(_name(spec.name))}"]
        d += [f"-o {_dq(report + '.out')}", f"-e {_dq(report + '.err')}"]
        if res.queue:
            d.append(f"-q {res.queue}")
        if res.account:
            d.append(f"-P {res.account}")
        if res.time:
            minutes = math.ceil(res.time / 60)
            d.append(f"-W {minutes // 60}:{minutes % 60:02d}")
        if res.nodes or res.ppn or res.threads:
            per_host = res.cores
            d.append(f"-n {(res.nodes or 1) * per_host}")
            span = f"ptile={per_host}" if res.nodes or res.ppn else "hosts=1"
            d.append(f'-R "span[{span}]"')
        if res.mem:
            d.append(f'-R "rusage[mem={res.mem}MB]"')
            d.append(f"-M {res.mem * (res.nodes or 1)}MB")
        if res.gpus:
            d.append(f'-gpu "num={res.gpus}"')
        if spec.hold:
            d.append("-H")
        if spec.after:
            d.append("-w " + _dq(" && ".join(f"done({j})" for j in spec.after)))
        lines = [f"#BSUB {x}" for x in d]
        lines += [raw if raw.startswith("#") else f"#BSUB {raw}" for raw in res.native]
        return lines

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
            raise TransportError(f"bjobs failed ({returncode}): {why.strip()[:300]}")
        if not out.strip():
            return {}
        try:
            records = json.loads(out, strict=False).get("RECORDS", [])
        except (ValueError, AttributeError):
            raise TransportError(f"bjobs printed unreadable JSON: {out.strip()[:200]!r}") from None
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
