"""The Grid Engine dialect (SGE 8, Son of Grid Engine, OGS): ``qsub``, ``qstat``, ``qacct``,
``qdel``, ``qhold``, ``qrls``, ``qconf``, rendered and parsed. Pure functions only.

Choices, and the Grid Engine facts behind them (checked on SGE 8.1.9, see
``tests/clusters/recorded/sge_*.txt``):

- Job ids: a single job is ``N``; array element ``i`` (0-based, as hpcexec counts) is
  ``N.<i+1>``, because SGE task ids start at 1 and ``qdel``, ``qhold`` and ``qrls`` take
  ``N.T`` as it is. ``HPCEXEC_JOB_ID`` in the job is the same string and
  ``HPCEXEC_ARRAY_INDEX`` is ``SGE_TASK_ID - 1``.
- Job names: SGE refuses names with white space, ``/ : @ \\ * ?``, non-ASCII characters,
  names starting with a digit and the keywords NONE, ALL and TEMPLATE (with "Error reading
  answer list from qmaster" for some of them). Every character other than letters, digits and
  ``_ . + -`` becomes ``_``, a leading digit gets a ``_`` before it, a keyword a ``_`` after it.
- Paths in ``#$`` lines: SGE drops every quote character from them, so a path containing
  ``'`` or ``"`` cannot be expressed (refused with :class:`BackendError` when the job is
  submitted); a path with white space is written in double quotes. SGE expands ``$TASK_ID``,
  ``$JOB_ID``, ``$USER``, ``$HOME``, ``$HOSTNAME`` and ``$JOB_NAME`` in ``-o``/``-e`` paths.
- Cores: SGE gives a job more than one slot only through a parallel environment. Name one
  with ``native="-pe NAME"`` (``qconf -spl`` lists them): hpcexec appends the slot count,
  nodes x ppn x threads. How those slots spread over hosts is the PE's ``allocation_rule``.
  ``native="-pe NAME SLOTS"`` is passed on as written. Without a PE, ``threads``, ``ppn`` or
  ``nodes`` above 1 are refused.
- Memory: ``mem`` (per node) becomes ``-l h_vmem=<mem / slots per node>M``: SGE multiplies
  per-slot requests by the slots, and ``h_vmem`` is the limit SGE enforces (an address-space
  limit: a program that reserves much more virtual memory than it uses needs more). Sites
  that schedule memory with another complex set :attr:`SgeBackend.mem_resource`
  (``mem_free``, ``h_rss``, ``m_mem_free``) or pass ``native="-l ..."``.
- GPUs: SGE has no standard GPU resource; ``gpus`` and ``gpus_per_task`` are refused, pass the site's complex with
  ``native`` (e.g. ``-l gpu=1``).
- Dependencies: ``-hold_jid`` waits for the named jobs to *end*, not to succeed, and takes
  whole jobs only (``-hold_jid 12.3`` is refused: "job 12.3 not found"), so a dependency on an
  array element waits for its whole array. A ``-hold_jid`` naming a job that has already left
  the queue is accepted and ignored.
- Status: ``qstat -xml`` takes no job list; ``qstat -xml -r -u $user`` (qstat itself expands
  ``$user``) lists every job of the user, and the ids asked about are picked out. Pending
  array tasks come as ranges (``3-10:1``, ``3,4``) and are expanded. A job waiting on
  ``-hold_jid`` shows as ``hqw`` just like a held one; ``-r`` adds ``predecessor_jobs`` to it,
  and such a job is reported pending, not held. ``Eqw`` (error state: the job can never start
  until an admin clears it with ``qmod -cj``) is reported held, with the reason.
- Accounting: ``qacct -j`` takes one job number (``qacct -j 12,13`` silently reads ``12``).
  A single job number (one job, or any number of elements of one array) is one ``qacct``
  call; several are asked with one ``sh -c`` loop of ``qacct`` calls, at most
  :data:`ACCT_IDS_PER_CALL` job numbers at a time (the rest are asked on later polls).
  ``failed 37`` (qmaster enforced h_rt, h_cpu or h_vmem) is TIMEOUT; ``failed 100``
  ("assumedly after job") means the job's top process died of a signal, whoever sent it:
  with ``h_rt`` reached it is TIMEOUT, with SIGKILL CANCELLED (``qdel`` sends SIGKILL; so
  does the kernel's out-of-memory killer, which SGE cannot tell apart), else FAILED. Other
  ``failed`` codes mean SGE could not run the job (26: output file, 28: working directory...)
  and are FAILED with SGE's words. A job deleted while pending leaves no accounting record.
- ``ru_maxrss`` is printed in KiB as if it were bytes (a 200 MiB job shows ``213.137KB``):
  ``max_rss`` reads it that way, and falls back to ``maxvmem``.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from typing import ClassVar

from ..errors import BackendError, SchedulerOutputError, SubmitError
from ..resources import Resources
from ..resourcevalues import format_time, local_time
from ..script import ScriptParts
from ..states import JobState
from .base import (
    JobStatus,
    Rule,
    SchedulerBackend,
    SubmitSpec,
    error_option,
    hold_option,
    mail_options,
    option,
    rule,
    stdin_option,
    warning_option,
)
from .sge_qacct import parse_qacct

#: job numbers asked of accounting in one call (each ``qacct`` reads the whole accounting file)
ACCT_IDS_PER_CALL = 20
#: names SGE refuses as object names
KEYWORDS = ("NONE", "ALL", "TEMPLATE")
#: the reason given for a job in error state (Eqw)
ERROR_STATE_REASON = (
    "error state: SGE cannot start the job (qstat -j ID shows why; qmod -cj ID clears the state)"
)

_NAME_BAD = re.compile(r"[^A-Za-z0-9_.+-]")
_SUBMITTED = re.compile(r"^(?:Your job(?:-array)? )?(\d+)(?:\.\d+-\d+:\d+)?(?:\s|$)", re.M)


def job_name(name: str) -> str:
    """A name SGE accepts, as close to ``name`` as it allows."""
    out = _NAME_BAD.sub("_", name) or "hpcexec"
    if out[0].isdigit():
        out = "_" + out
    if out.upper() in KEYWORDS:
        out += "_"
    return out


def _path(path: str) -> str:
    """A path as a ``#$`` line can carry it."""
    if "'" in path or '"' in path or any(ord(c) < 32 for c in path):
        raise BackendError(
            f"SGE cannot take the path {path!r}: it drops quote characters from the paths in "
            "job script directives. Use a cache_dir, workdir, stdout and stderr without quotes."
        )
    return f'"{path}"' if any(c.isspace() for c in path) else path


def _pe(native: tuple[str, ...]) -> tuple[int, list[str]] | None:
    """The index of the native ``-pe`` directive and its words, if there is one."""
    for i, raw in enumerate(native):
        words = raw.split()
        if words[:1] == ["#$"]:
            words = words[1:]
        if words[:1] == ["-pe"]:
            return i, words
    return None


def _tasks(text: str) -> list[int]:
    """SGE task ranges: ``5``, ``3,4``, ``3-10:1``, ``1-9:2``, ``1,3-5:1``."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.match(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$", part)
        if not m:
            continue
        first = int(m[1])
        last = int(m[2]) if m[2] else first
        step = int(m[3]) if m[3] else 1
        out.extend(range(first, last + 1, max(step, 1)))
    return out


def _qstat_state(code: str, waiting_for: str | None) -> tuple[JobState, str | None] | None:
    """An SGE state code (``qw``, ``hqw``, ``r``, ``t``, ``Rr``, ``s``, ``S``, ``T``, ``dr``,
    ``Eqw``, ...) as a common state and a reason."""
    if "E" in code:
        return JobState.HELD, ERROR_STATE_REASON
    if any(c in code for c in "sST"):
        return JobState.SUSPENDED, None
    if "r" in code or "t" in code:
        return JobState.RUNNING, None
    if "h" in code:
        if waiting_for:
            return JobState.PENDING, f"waiting for job(s) {waiting_for}"
        return JobState.HELD, None
    if "q" in code or "w" in code:
        return JobState.PENDING, None
    return None


def _when(text: str) -> str:
    """A canonical time as ``-a`` reads it: ``CCYYMMDDhhmm.SS`` in the local time of the
    submitting machine (sge_types(5), date_time)."""
    return local_time(text).strftime("%Y%m%d%H%M.%S")


@rule("mem", "native", "ppn", "threads")
def _mem(b: SgeBackend, spec: SubmitSpec) -> list[str]:
    res = spec.res
    if not res.mem:
        return []
    per_slot = math.ceil(res.mem / res.cores) if _pe(res.native) else res.mem
    return [f"-l {b.mem_resource}={per_slot}M"]


@rule("array")
def _array(b: object, spec: SubmitSpec) -> list[str]:
    if spec.array_size is None:
        return []
    d = [f"-t 1-{spec.array_size}"]
    if spec.array_limit:
        d.append(f"-tc {spec.array_limit}")
    return d


@rule("after")
def _after(b: object, spec: SubmitSpec) -> list[str]:
    if not spec.after:
        return []
    # Whole jobs only: SGE refuses "-hold_jid 12.3".
    jobs = sorted({j.split(".")[0] for j in spec.after}, key=_int_key)
    return ["-hold_jid " + ",".join(jobs)]


@rule("native", "nodes", "ppn", "threads")
def _native(b: SgeBackend, spec: SubmitSpec) -> list[str]:
    res = spec.res
    pe = _pe(res.native)
    out = []
    for i, raw in enumerate(res.native):
        if pe is not None and i == pe[0] and len(pe[1]) == 2:
            raw = f"-pe {pe[1][1]} {b._slots(res)}"
        out.append(raw)
    return out


#: sge_submit(1) -m letters: b (beginning), e (end), a (aborted or rescheduled)
MAIL_LETTERS = {"begin": "b", "end": "e", "fail": "a"}
#: Grid Engine's dialect (sge_submit(1) of SGE 8.1.9): one rule per key, in directive order.
#: ``-V``: the job gets the submitting environment, as under sbatch.
RULES: tuple[Rule, ...] = (
    Rule(("name",), lambda b, spec: [f"-N {job_name(spec.name)}", "-S /bin/bash", "-V"]),
    Rule(("stdout",), lambda b, spec: [f"-o {_path(spec.stdout)}"]),
    error_option(lambda path: f"-e {_path(path)}"),
    Rule(("workdir",), lambda b, spec: [f"-wd {_path(spec.workdir)}"]),
    option("queue", lambda v: f"-q {v}"),
    option("account", lambda v: f"-A {v}"),
    option("time", lambda v: f"-l h_rt={format_time(v)}"),
    # SIGUSR1 at the soft limit; killed at h_rt (or the queue's notify time after s_rt)
    option("soft_time", lambda v: f"-l s_rt={format_time(v)}"),
    _mem,
    _array,
    hold_option("-h"),
    # SIGUSR2 before the kill, ahead by the queue's notify time (qconf -sq: notify)
    warning_option(lambda s: ["-notify"]),
    _after,
    mail_options("-M ", "-m ", MAIL_LETTERS),
    option("begin", lambda v: f"-a {_when(v)}"),
    option("join_output", lambda v: "-j y"),
    stdin_option(lambda path: f"-i {_path(path)}"),
    _native,
)


class SgeBackend(SchedulerBackend):
    name = "sge"
    commands = ("qsub", "qstat", "qacct")
    default_max_array = 75000  # SGE's default max_aj_tasks
    output_live = True  # written by the job's own step as it runs
    array_index_pattern = "$TASK_ID"
    array_index_expr = "$((SGE_TASK_ID-1))"
    array_index_base = 1  # $TASK_ID in output paths counts from 1
    directives_anywhere = "#$"  # qsub reads every "#$" line of a script, wherever it is
    poll_min = 1.0
    poll_max = 30.0
    #: the complex that ``mem`` is requested as, per slot
    mem_resource: ClassVar[str] = "h_vmem"
    prefix = "#$"
    rules = RULES
    # qmaster's refusal at max_u_jobs (per user) or max_jobs (per cluster)
    submit_limits = (r"job rejected: (only \d+ jobs are allowed per (?:user|cluster))",)
    refused: ClassVar[dict[str, str]] = {
        "deadline": "SGE's -dl only raises the priority of a deadline job (for users the "
        "administrator allows), it does not stop the job from running later; leave "
        "deadline unset and bound the run with time, or use backend='slurm'",
    }

    def task_launcher(self, res: Resources, python: str) -> list[str]:
        """``mpirun`` with the tasks' number (the parallel environment's ``$NSLOTS`` counts
        ``threads`` too): Open MPI and Intel MPI read the hosts from Grid Engine."""
        return ["mpirun", "-np", str(res.ntasks)]

    def check(self, res: Resources) -> None:
        self.check_refused(res)
        if res.gpus_per_node:
            key = "gpus" if res.gpus else "gpus_per_task"
            raise BackendError(
                f"SGE has no standard GPU resource: leave {key} unset and request your site's "
                "GPU complex with native, e.g. native='-l gpu=1' (qconf -sc lists them)"
            )
        pe = _pe(res.native)
        if (res.nodes or 1) * res.cores > 1 and pe is None:
            raise BackendError(
                "SGE gives a job more than one core only through a parallel environment: add "
                "native='-pe NAME' (hpcexec appends nodes x ppn x threads slots; qconf -spl "
                "lists the parallel environments), or drop nodes, ppn and threads"
            )
        if pe is not None and len(pe[1]) < 2:
            raise BackendError(
                f"native {res.native[pe[0]]!r} names no parallel environment: "
                "use '-pe NAME' or '-pe NAME SLOTS'"
            )
        for path in (res.stdout, res.stderr, res.workdir, res.stdin):
            if path:
                _path(path)

    def script_parts(
        self, res: Resources, *, name: str, jobdir: str, stdout: str, stderr: str, workdir: str
    ) -> ScriptParts:
        for path in (jobdir, stdout, stderr, workdir):
            _path(path)  # refused now, at submit(), rather than when the monitor submits
        return ScriptParts(
            directives=[],  # given per submission by directives(), see SchedulerQueue
            prologue=(
                "_hx_id=${JOB_ID:-}; _hx_index=\n"
                "case ${SGE_TASK_ID:-undefined} in undefined) ;; "
                "*) _hx_id=$JOB_ID.$SGE_TASK_ID; _hx_index=$((SGE_TASK_ID-1)) ;; esac\n"
                'if [ -n "${PE_HOSTFILE:-}" ] && [ -r "$PE_HOSTFILE" ]; then\n'
                '  _hx_nodes=$(awk \'{ printf "%s%s", (NR > 1 ? "," : ""), $1 }\' '
                '"$PE_HOSTFILE")\n'
                "else _hx_nodes=${HOSTNAME:-}; fi"
            ),
            job_id_expr='"$_hx_id"',
            nodelist_expr='"$_hx_nodes"',
            array_index_expr='"$_hx_index"',
        )

    def _slots(self, res: Resources) -> int:
        return (res.nodes or 1) * res.cores

    def submit_argv(self, spec: SubmitSpec) -> list[str]:
        return ["qsub", "-terse", spec.script]

    def parse_submit(self, out: str) -> str:
        # -terse prints "12" for a job and "12.1-10:1" for an array.
        m = _SUBMITTED.search(out)
        if not m:
            raise SubmitError(f"qsub printed no job id: {out.strip()[:200]!r}")
        return m.group(1)

    def element_id(self, array_id: str, index: int) -> str:
        return f"{array_id}.{index + 1}"

    def status_argv(self, job_ids: list[str]) -> list[str]:
        # qstat takes no job list with -xml: every job of this user, picked out in parse.
        return ["qstat", "-xml", "-r", "-u", "$user"]

    def parse_status(self, out: str, err: str, returncode: int) -> dict[str, JobStatus]:
        if returncode != 0:
            raise SchedulerOutputError(f"qstat failed ({returncode}): {(err or out).strip()[:300]}")
        try:
            root = ET.fromstring(out)
        except ET.ParseError as e:
            raise SchedulerOutputError(
                f"qstat printed no XML ({e}): {out.strip()[:200]!r}"
            ) from None
        found: dict[str, JobStatus] = {}
        for job in root.iter("job_list"):
            number = (job.findtext("JB_job_number") or "").strip()
            code = (job.findtext("state") or "").strip()
            got = _qstat_state(code, (job.findtext("predecessor_jobs") or "").strip() or None)
            if not number or got is None:
                continue
            state, reason = got
            queue = (job.findtext("queue_name") or "").strip()
            node = queue.partition("@")[2] or None
            status = JobStatus(state, reason=reason, nodelist=node, ending="d" in code)
            tasks = (job.findtext("tasks") or "").strip()
            if not tasks:
                found[number] = status
            else:
                for t in _tasks(tasks):
                    found[f"{number}.{t}"] = status
        return found

    def accounting_argv(self, job_ids: list[str]) -> list[str] | None:
        numbers = sorted({j.split(".")[0] for j in job_ids if j.split(".")[0].isdigit()}, key=int)[
            :ACCT_IDS_PER_CALL
        ]
        if not numbers:
            return None
        if len(numbers) == 1:
            return ["qacct", "-j", numbers[0]]
        # qacct -j takes one job number; a job not yet in accounting must not hide the rest.
        return ["sh", "-c", 'for j do qacct -j "$j"; done; exit 0', "sh", *numbers]

    def parse_accounting(self, out: str) -> dict[str, JobStatus]:
        return parse_qacct(out)

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        return ["qdel", *job_ids]

    def hold_argv(self, job_ids: list[str]) -> list[str]:
        return ["qhold", *job_ids]

    def release_argv(self, job_ids: list[str]) -> list[str]:
        return ["qrls", *job_ids]

    def suspend_argv(self, job_ids: list[str]) -> list[str]:
        return ["qmod", "-sj", *job_ids]

    def resume_argv(self, job_ids: list[str]) -> list[str]:
        return ["qmod", "-usj", *job_ids]

    def find_argv(self) -> list[str] | None:
        # "qstat -j '*'" exits 1 when there are no jobs; with -xml it exits 0.
        return ["qstat", "-xml", "-j", "*"]

    def parse_find(self, out: str) -> dict[str, str]:
        try:
            root = ET.fromstring(out)
        except ET.ParseError:
            return {}
        found = {}
        for job in root.iter("element"):
            number = (job.findtext("JB_job_number") or "").strip()
            script = (job.findtext("JB_script_file") or "").strip()
            if number and script:
                found[script] = number
        return found

    def max_array_argv(self) -> list[str] | None:
        return ["qconf", "-sconf"]

    def parse_max_array(self, out: str) -> int | None:
        m = re.search(r"^max_aj_tasks\s+(\d+)", out, re.M)
        if not m or m.group(1) == "0":  # 0: no limit
            return None
        return int(m.group(1))


def _int_key(text: str) -> tuple[int, str]:
    return (int(text), text) if text.isdigit() else (0, text)
