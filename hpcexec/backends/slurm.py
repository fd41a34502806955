"""The SLURM dialect: directives and argv for ``sbatch``, ``squeue``, ``sacct``, ``scancel``,
``scontrol``, and their output parsed. Pure functions only."""

from __future__ import annotations

import re
import shlex
from typing import Any, ClassVar

from ..errors import SchedulerOutputError, SubmitError
from ..resources import Resources
from ..resourcevalues import MAIL_EVENTS, local_time
from ..script import ScriptParts
from ..states import JobState
from .base import (
    NATIVE,
    JobStatus,
    Rule,
    SchedulerBackend,
    SubmitSpec,
    array_range,
    error_option,
    hold_option,
    mail_options,
    option,
    stdin_option,
    warning_option,
)

#: SLURM state names (squeue %T, sacct State) onto the common states
STATES: dict[str, JobState] = {
    "PENDING": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.HELD,
    "CONFIGURING": JobState.RUNNING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "SUSPENDED": JobState.SUSPENDED,
    "STOPPED": JobState.SUSPENDED,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "PREEMPTED": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
    "DEADLINE": JobState.TIMEOUT,
    "TIMEOUT": JobState.TIMEOUT,
}
#: final states whose name says more than the common state does
REASONS = {
    "OUT_OF_MEMORY": "out of memory",
    "NODE_FAIL": "node failure",
    "BOOT_FAIL": "node boot failure",
    "PREEMPTED": "preempted",
    "DEADLINE": "deadline reached",
    "TIMEOUT": "walltime exceeded",
}
#: pending reasons that mean the job is held, or will never run
HELD_REASONS = ("JobHeldUser", "JobHeldAdmin", "launch failed requeued held")
NEVER_REASON = "DependencyNeverSatisfied"

# slurmstepd's words when it kills a job for its memory: by the accounting poll
# (JobAcctGatherParams=OverMemoryKill) or by the cgroup's out-of-memory killer.
_MEMORY_KILL = re.compile(
    r"^slurmstepd[^:]*: error: (?:\*+ )?(.*(?:exceeded (?:job |step )?memory "
    r"limit|oom[-_]kill event).*?)\s*$",
    re.M | re.I,
)
#: sbatch's words for a refusal at a limit on queued jobs: the limit's name (slurmctld's
#: reason, e.g. QOSMaxSubmitJobPerUserLimit), else the policy message alone when no other
#: reason (a size or time limit, e.g. QOSMaxWallDurationPerJobLimit) is named with it
SUBMIT_LIMITS = (
    r"\b((?:QOS|Assoc)\w*Submit\w*Limit)\b",
    r"(?sm)\A(?!.*^\w+: error: (?:QOS|Assoc)\w+\s*$).*?(job violates accounting/QOS policy)",
)
_QOS = re.compile(r"^(?:--qos(?:=|\s+)|-q\s*)(\S+)")
_SUBMITTED = re.compile(r"^(?:Submitted batch job )?(\d+)(?:;\S+)?\s*$", re.M)
#: squeue's fields, each ended by "|" and never cut short. exit_code is slurmctld's wait status
#: of the batch script, set with the final state: accounting records a job's end later than
#: squeue shows it (tests/clusters/recorded/slurm_sacct_end_not_yet_recorded.txt).
STATUS_FIELDS = "JobArrayID:|,State:|,Reason:|,NodeList:|,exit_code:|"


#: one ``Key=Value`` of ``scontrol show job -o`` (a value runs to the next key: paths may
#: hold spaces; keys such as ``AllocNode:Sid`` and ``CPUs/Task`` hold ':' and '/')
_SCONTROL_FIELD = re.compile(r"(?:^| )([A-Za-z][\w:/]*)=(.*?)(?= [A-Za-z][\w:/]*=|$)")


def _seconds(text: str) -> float | None:
    """``[D-]HH:MM:SS[.fff]`` or ``MM:SS`` (sacct Elapsed) in seconds."""
    if not text:
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [float(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    h, m, s = parts
    return days * 86400 + h * 3600 + m * 60 + s


def _wait_status(text: str) -> tuple[int | None, int | None]:
    """A wait status as squeue's exit_code prints it (768: exit code 3; 9: SIGKILL) as
    (exit code, signal or None), the split sacct's ExitCode shows; (None, None) if absent."""
    if not text.strip().isdigit():
        return None, None
    status = int(text)
    return (status >> 8) & 0xFF, (status & 0x7F) or None


def _mib(text: str) -> int | None:
    """sacct memory like ``3124K``, ``2.5M``, ``1G`` in MiB."""
    m = re.match(r"^([\d.]+)([KMGTP]?)$", text.strip())
    if not m:
        return None
    factor = {"": 1 / 1024**2, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}
    return max(1, round(float(m[1]) * factor[m[2]]))


def _time(seconds: int) -> str:
    days, rest = divmod(int(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{days}-{h:02d}:{m:02d}:{s:02d}" if days else f"{h:02d}:{m:02d}:{s:02d}"


def _when(text: str) -> str:
    """A canonical time as ``--begin`` and ``--deadline`` read it: local time of the
    submitting machine, ``YYYY-MM-DDTHH:MM:SS`` (sbatch(1), "--begin")."""
    return local_time(text).strftime("%Y-%m-%dT%H:%M:%S")


q = shlex.quote


def _gpus_per_task(res: Resources) -> list[str]:
    """``--gpus-per-task`` with the task count, which sbatch requires beside it ("--gpus-per-task
    ... used without either --gpus or -n/--ntasks is not allowed", SLURM 23.11)."""
    if not res.gpus_per_task:
        return []
    return [f"--ntasks={res.ntasks}", f"--gpus-per-task={res.gpus_per_task}"]


#: SLURM's dialect (sbatch(1) of SLURM 22.05): one rule per key, in directive order.
#: ``join_output``: sbatch sends standard error to the ``--output`` file when no ``--error``
#: is given ("By default both standard output and standard error are directed to the same
#: file").
RULES: tuple[Rule, ...] = (
    Rule(("name",), lambda b, spec: [f"--job-name={q(spec.name)}"]),
    Rule(("stdout",), lambda b, spec: [f"--output={q(spec.stdout)}"]),
    error_option(lambda path: f"--error={q(path)}"),
    Rule(("workdir",), lambda b, spec: [f"--chdir={q(spec.workdir)}"]),
    option("queue", lambda v: f"--partition={v}"),
    option("account", lambda v: f"--account={v}"),
    option("time", lambda v: f"--time={_time(v)}"),
    option("nodes", lambda v: f"--nodes={v}"),
    option("ppn", lambda v: f"--ntasks-per-node={v}"),
    option("threads", lambda v: f"--cpus-per-task={v}"),
    option("mem", lambda v: f"--mem={v}M"),
    option("gpus", lambda v: f"--gpus-per-node={v}"),
    Rule(("gpus_per_task",), lambda b, spec: _gpus_per_task(spec.res)),
    Rule(("array",), lambda b, spec: [f"--array={r}"] if (r := array_range(spec)) else []),
    hold_option("--hold"),
    # B: the batch shell only, which is the runner (exec'd); --requeue: preemption requeues
    warning_option(lambda s: [f"--signal=B:USR2@{s}", "--requeue"]),
    Rule(
        ("after",),
        lambda b, spec: ["--dependency=afterok:" + ":".join(spec.after)] if spec.after else [],
    ),
    mail_options("--mail-user=", "--mail-type=", {e: e.upper() for e in MAIL_EVENTS}, ","),
    option("begin", lambda v: f"--begin={_when(v)}"),
    option("deadline", lambda v: f"--deadline={_when(v)}"),
    stdin_option(lambda path: f"--input={q(path)}"),
    NATIVE,
)


# HPCEXEC_NODELIST is comma-separated host names on every backend; SLURM's list may be in its
# compressed form (n[1-2]), which only scontrol expands (kept as it is where that fails).
_NODES_PROLOGUE = (
    "_hx_nodes=${SLURM_JOB_NODELIST:-}; case $_hx_nodes in *\\[*) "
    '_hx_x=$(scontrol show hostnames "$_hx_nodes" 2>/dev/null | paste -sd, -); '
    '[ -n "$_hx_x" ] && _hx_nodes=$_hx_x;; esac'
)


class SlurmBackend(SchedulerBackend):
    name = "slurm"
    commands = ("sbatch", "squeue")
    default_max_array = 1000
    output_live = True  # written by the job's own step as it runs
    array_index_pattern = "%a"
    array_index_expr = "$SLURM_ARRAY_TASK_ID"
    poll_min = 1.0
    poll_max = 30.0
    prefix = "#SBATCH"
    rules = RULES
    submit_limits = SUBMIT_LIMITS
    array_too_large = r"Invalid job array specification"
    refused: ClassVar[dict[str, str]] = {
        "soft_time": "SLURM has no soft wallclock limit; time is the hard one. For a signal "
        "ahead of it give native=['--signal=B:USR1@300'] (or a Checkpointable with requeue), "
        "or use backend='sge' (s_rt)",
    }

    def task_launcher(self, res: Resources, python: str) -> list[str]:
        """``srun``, which kills every task when one fails (``--kill-on-bad-exit``), with
        ``--mpi=`` where the ``mpi`` resource asks (else the site's ``MpiDefault``) and the
        cores of each task (srun does not take ``--cpus-per-task`` from the job)."""
        argv = ["srun", "--kill-on-bad-exit=1", f"--ntasks={res.ntasks}"]
        if res.mpi:
            argv.append(f"--mpi={res.mpi}")
        if res.threads:
            argv.append(f"--cpus-per-task={res.threads}")
        return argv

    def check(self, res: Resources) -> None:
        self.check_refused(res)

    def script_parts(
        self, res: Resources, *, name: str, jobdir: str, stdout: str, stderr: str, workdir: str
    ) -> ScriptParts:
        return ScriptParts(
            directives=[],  # given per submission by directives(), see SchedulerQueue
            prologue="\n".join(
                [
                    "_hx_id=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}",
                    _NODES_PROLOGUE,
                ]
            ),
            job_id_expr='"${_hx_id:-${SLURM_JOB_ID:-}}"',
            nodelist_expr='"$_hx_nodes"',
            array_index_expr='"${SLURM_ARRAY_TASK_ID:-}"',
        )

    def memory_kill(self, stderr: str) -> str | None:
        m = _MEMORY_KILL.search(stderr)
        return m.group(1) if m else None

    def submit_argv(self, spec: SubmitSpec) -> list[str]:
        return ["sbatch", "--parsable", spec.script]

    def parse_submit(self, out: str) -> str:
        m = _SUBMITTED.search(out)
        if not m:
            raise SubmitError(f"sbatch printed no job id: {out.strip()[:200]!r}")
        return m.group(1)

    def element_id(self, array_id: str, index: int) -> str:
        return f"{array_id}_{index}"

    @staticmethod
    def _query_ids(job_ids: list[str]) -> str:
        # Ask for whole arrays: "123_4" is answered by "123", with one line per element (-r).
        return ",".join(sorted({j.split("_")[0] for j in job_ids}, key=int))

    def status_argv(self, job_ids: list[str]) -> list[str]:
        return [
            "squeue",
            "-h",
            "-r",
            "-t",
            "all",
            "-O",
            STATUS_FIELDS,
            "-j",
            self._query_ids(job_ids),
        ]

    def parse_status(self, out: str, err: str, returncode: int) -> dict[str, JobStatus]:
        if returncode != 0:
            if "Invalid job id" in err or "Invalid job id" in out:
                return {}  # every id asked about has left the queue
            raise SchedulerOutputError(
                f"squeue failed ({returncode}): {(err or out).strip()[:300]}"
            )
        found: dict[str, JobStatus] = {}
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) < 3:
                if line.strip():  # squeue -h prints job lines only
                    raise SchedulerOutputError(
                        f"squeue printed an unreadable line: {line.strip()[:200]!r}"
                    )
                continue
            job_id, name, reason = parts[0], parts[1], parts[2]
            state = STATES.get(name.split()[0])
            if state is None:
                continue
            why = None if reason in ("None", "(null)", "") else reason
            if state is JobState.PENDING and why in HELD_REASONS:
                state = JobState.HELD
            code = sig = None
            if state.finished:
                why = REASONS.get(name)
                code, sig = _wait_status(parts[4] if len(parts) > 4 else "")
            found[job_id] = JobStatus(
                state,
                exit_code=code,
                signal=sig,
                reason=why,
                nodelist=parts[3] if len(parts) > 3 and parts[3] else None,
                ending=name.split()[0] == "COMPLETING",
            )
        return found

    def accounting_argv(self, job_ids: list[str]) -> list[str] | None:
        return [
            "sacct",
            "-P",
            "-n",
            "-o",
            "JobIDRaw,JobID,State,ExitCode,Elapsed,MaxRSS,NodeList,TotalCPU",
            "-j",
            self._query_ids(job_ids),
        ]

    def parse_accounting(self, out: str) -> dict[str, JobStatus]:
        jobs: dict[str, dict[str, Any]] = {}
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) < 7:
                continue
            job_id, state_text, exit_text, elapsed, max_rss, nodes = parts[1:7]
            if nodes == "None assigned":
                nodes = ""
            base, _, step = job_id.partition(".")
            rec = jobs.setdefault(base, {})
            if step:  # steps carry MaxRSS; the allocation line carries the state
                rss = _mib(max_rss) if max_rss else None
                if rss is not None:
                    rec["max_rss"] = max(rss, rec.get("max_rss") or 0)
                continue
            name = state_text.split()[0]
            state = STATES.get(name)
            if state is None:
                continue
            code, _, sig = exit_text.partition(":")
            rec.update(
                state=state,
                exit_code=int(code) if code.isdigit() else None,
                signal=int(sig) if sig.isdigit() and int(sig) else None,
                reason=REASONS.get(name),
                elapsed=_seconds(elapsed),
                nodelist=nodes or None,
                # the allocation's TotalCPU sums its steps' (absent from older records)
                cpu_seconds=_seconds(parts[7]) if len(parts) > 7 and parts[7] else None,
            )
        return {j: JobStatus(**v) for j, v in jobs.items() if "state" in v}

    def describe_argv(self, job_id: str) -> list[str] | None:
        return ["scontrol", "show", "job", "-o", job_id]

    def parse_described(self, out: str) -> dict[str, str]:
        fields = dict(_SCONTROL_FIELD.findall(out.strip().splitlines()[0] if out.strip() else ""))
        names = {"JobName": "name", "StdOut": "stdout", "StdErr": "stderr", "WorkDir": "workdir"}
        return {ours: fields[theirs] for theirs, ours in names.items() if fields.get(theirs)}

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        return ["scancel", *job_ids]

    def hold_argv(self, job_ids: list[str]) -> list[str]:
        return ["scontrol", "hold", ",".join(job_ids)]

    def release_argv(self, job_ids: list[str]) -> list[str]:
        return ["scontrol", "release", ",".join(job_ids)]

    def suspend_argv(self, job_ids: list[str]) -> list[str]:
        return ["scontrol", "suspend", ",".join(job_ids)]

    def resume_argv(self, job_ids: list[str]) -> list[str]:
        return ["scontrol", "resume", ",".join(job_ids)]

    def find_argv(self) -> list[str] | None:
        return ["squeue", "--me", "-h", "-o", "%i|%o"]

    def parse_find(self, out: str) -> dict[str, str]:
        found = {}
        for line in out.splitlines():
            job_id, _, command = line.strip().partition("|")
            if command:
                found[command] = job_id.split("_")[0]
        return found

    def submit_limit_argv(self) -> list[str] | None:
        """The user's associations' MaxSubmit and QOS, then every QOS's MaxSubmitPU. The two
        queries run side by side (each waits a quarter of a second or so on slurmdbd); the
        command fails if either does."""
        return [
            "sh",
            "-c",
            'q=$(mktemp) || exit 1; sacctmgr -n -P show qos format=Name,MaxSubmitPU > "$q" & '
            'p=$!; a=$(sacctmgr -n -P show assoc where user="$(id -un)" '
            "format=MaxSubmit,DefaultQOS,QOS) && wait $p && "
            """printf '%s\\n-- qos\\n' "$a" && cat "$q"; s=$?; rm -f "$q"; exit $s""",
        ]

    def parse_submit_limit(self, out: str, native: tuple[str, ...]) -> int | None:
        """The smallest of the user's associations' MaxSubmit and the MaxSubmitPU of the QOS
        the job asks for (``--qos``), else of the associations' default QOS."""
        assocs, sep, qos_part = out.partition("-- qos\n")
        if not sep:
            return None
        per_qos = {}
        for line in qos_part.splitlines():
            name, _, most = line.strip().partition("|")
            if name and most.strip().isdigit():
                per_qos[name] = int(most)
        limits, defaults = [], set()
        for line in assocs.splitlines():
            fields = line.strip().split("|")
            if len(fields) < 3:
                continue
            if fields[0].isdigit():
                limits.append(int(fields[0]))
            allowed = [q for q in fields[2].split(",") if q]
            defaults.add(fields[1] or (allowed[0] if len(allowed) == 1 else "normal"))
        asked = [m.group(1) for d in native if (m := _QOS.match(d.strip()))]
        limits += [per_qos[q] for q in (asked[-1:] or defaults) if q in per_qos]
        return min(limits) if limits else None

    def max_array_argv(self) -> list[str] | None:
        return ["scontrol", "show", "config"]

    def parse_max_array(self, out: str) -> int | None:
        m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.M)
        return int(m.group(1)) - 1 if m else None  # indices run to MaxArraySize - 1
