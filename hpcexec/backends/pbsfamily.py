"""What PBS Pro and Torque share: job names and ids, the POSIX ``qsub`` rules both follow, the
job control commands, and reading a finished job's exit status. Pure functions only; the
two backends import from here, never from each other."""

from __future__ import annotations

import re

from ..errors import BackendError, SubmitError
from ..resources import Resources
from ..resourcevalues import local_time
from ..states import JobState
from .base import JobStatus, Rule, SubmitSpec, Usage, hold_option, mail_options, option

JOB_ID = re.compile(r"^(\d+)(\[\d*\])?((?:\.\S+)?)$")


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

    def order(job_id: str) -> tuple[int, str]:
        m = JOB_ID.match(job_id)
        return (int(m[1]) if m else 0, job_id)

    return sorted(wanted, key=order)


def aliases(job_id: str) -> list[str]:
    """The id, and the same without the server suffix (``qsub`` may print either)."""
    m = JOB_ID.match(job_id)
    return [job_id, f"{m[1]}{m[2] or ''}"] if m and m[3] else [job_id]


def check_native(res: Resources, prefix: str, scheduler: str) -> None:
    for raw in res.native:
        if raw.startswith("#") and not raw.startswith(prefix + " "):
            raise BackendError(
                f"native directive {raw!r} is not a {scheduler} directive: give "
                f"'{prefix} ...' lines or bare options such as '-l place=excl'"
            )


def nodefile_prologue() -> str:
    """Shell lines putting the distinct hosts of ``$PBS_NODEFILE`` into ``_hx_nodes``."""
    return (
        '_hx_nodes=; if [ -r "${PBS_NODEFILE:-}" ]; then while read -r _hx_n; do '
        'case ",$_hx_nodes," in *",$_hx_n,"*) ;; '
        '*) [ -n "$_hx_n" ] && _hx_nodes="${_hx_nodes:+$_hx_nodes,}$_hx_n";; esac; '
        'done < "$PBS_NODEFILE"; fi'
    )


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
    factor = {
        None: 1 / 1024**2,
        "b": 1 / 1024**2,
        "kb": 1 / 1024,
        "mb": 1,
        "gb": 1024,
        "tb": 1024**2,
        "w": 8 / 1024**2,
        "kw": 8 / 1024,
        "mw": 8,
        "gw": 8 * 1024,
    }[m[2]]
    return max(1, round(int(m[1]) * factor))


def finished_status(
    code: int | None,
    *,
    scheduler: str,
    comment: str | None = None,
    codes: dict[int, tuple[JobState, str]],
    usage: Usage,
) -> JobStatus:
    """A finished PBS job (F/X, or Torque's C) from its exit status; ``codes``: the
    scheduler's own negative exit statuses."""
    if code is None:
        return JobStatus(
            JobState.CANCELLED,
            reason=comment or "ended without an exit status (deleted before it ran)",
            **usage,
        )
    if code in codes:
        state, why = codes[code]
        return JobStatus(state, exit_code=code, reason=why, **usage)
    signal = code - 256 if code >= 256 else None  # killed by the scheduler (qdel, a limit)
    if comment and "exceeded resource walltime" in comment:
        return JobStatus(
            JobState.TIMEOUT, exit_code=code, signal=signal, reason="walltime exceeded", **usage
        )
    if code < 0:
        return JobStatus(
            JobState.FAILED,
            exit_code=code,
            reason=f"{scheduler} could not run the job (exit status {code})",
            **usage,
        )
    if signal is not None:
        return JobStatus(
            JobState.FAILED,
            exit_code=code,
            signal=signal,
            reason=f"killed by signal {signal}",
            **usage,
        )
    state = JobState.COMPLETED if code == 0 else JobState.FAILED
    return JobStatus(state, exit_code=code, **usage)


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
    "soft_time": "PBS has no soft wallclock limit; time is the hard one (a Checkpointable "
    "with requeue gets SIGUSR2 ahead of it), or use backend='sge' (s_rt)",
}


class PbsControl:
    """The submit and job control commands, and the job ids, PBS Pro and Torque share."""

    #: qsub's refusals at a limit on queued jobs: PBS Pro's queued_jobs_threshold and
    #: max_queued ("would exceed queue generic's per-user limit of jobs in 'Q' state"),
    #: Torque's max_user_queuable and max_queuable
    submit_limits: tuple[str, ...] = (
        r"(would exceed [^\n]*limit of jobs[^\n]*)",
        r"(Maximum number of jobs already in queue[^\n]*)",
    )

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
