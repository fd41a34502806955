"""What every backend provides. Backends are pure: no I/O, only text in and text out."""

from __future__ import annotations

import abc
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypedDict

from ..errors import BackendError
from ..layout import under
from ..resources import Resources
from ..script import ScriptParts
from ..states import JobState


class Backend(abc.ABC):
    """A scheduler dialect: renders resources, builds argv, parses command output."""

    name: ClassVar[str]
    #: polling interval: start (seconds), and the cap that backoff grows to
    poll_min: ClassVar[float] = 1.0
    poll_max: ClassVar[float] = 30.0
    #: resource keys this backend cannot express: key -> what to do instead
    refused: ClassVar[dict[str, str]] = {}

    def task_launcher(self, res: Resources, python: str) -> list[str]:
        """The argv prefix that runs a command once in each task of a job asking for
        ``res`` (``res.ntasks`` = nodes x ppn), under the scheduler's launcher; ``python``:
        the job's interpreter. Pure: the job script runs it."""
        raise BackendError(
            f"the {self.name} backend has no task launcher, so a callable cannot run in "
            f"{res.ntasks} tasks there; ask for one task (drop nodes/ppn) and start the "
            "tasks yourself with submit_shell"
        )

    @abc.abstractmethod
    def check(self, res: Resources) -> None:
        """Raise :class:`~hpcexec.errors.BackendError` if ``res`` cannot be expressed."""

    def fits(self, res: Resources) -> None:  # noqa: B027 - optional: a scheduler places
        """Raise :class:`~hpcexec.errors.BackendError` if a job of ``res`` could never start
        where this backend runs it (the local machine's cores and GPUs); asked when a job is
        submitted, not when its script is only rendered."""

    def check_refused(self, res: Resources) -> None:
        """Refuse the first key of :attr:`refused` that ``res`` sets."""
        for key, instead in self.refused.items():
            if getattr(res, key):
                raise BackendError(
                    f"the {self.name} backend cannot express the resource {key!r}: {instead}"
                )

    @abc.abstractmethod
    def script_parts(
        self, res: Resources, *, name: str, jobdir: str, stdout: str, stderr: str, workdir: str
    ) -> ScriptParts:
        """Directives and the expressions that set the core ``HPCEXEC_*`` variables.
        ``stdout``/``stderr``: the job's output files (:class:`hpcexec.layout.JobLayout`)."""


@dataclass(frozen=True)
class JobStatus:
    """What a scheduler said about one job (or one array element)."""

    state: JobState
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    nodelist: str | None = None
    elapsed: float | None = None  # seconds
    max_rss: int | None = None  # MiB
    cpu_seconds: float | None = None  # user + system, where accounting keeps it
    # Still listed, but ended or cancelled and being cleaned up (SLURM's COMPLETING, Grid
    # Engine's d states): how it ended is not known yet.
    ending: bool = False


class Usage(TypedDict):
    """What a job used, as a scheduler's status reports it (keyword arguments of
    :class:`JobStatus`)."""

    nodelist: str | None
    elapsed: float | None
    max_rss: int | None


@dataclass(frozen=True)
class SubmitSpec:
    """One submission: a script, possibly as an array of ``array_size`` elements."""

    script: str
    res: Resources
    name: str
    stdout: str
    stderr: str
    workdir: str
    array_size: int | None = None  # None: a single job
    array_limit: int | None = None  # at most this many elements run at once
    hold: bool = False
    after: tuple[str, ...] = ()  # scheduler job ids that must complete successfully first
    warning: int | None = None  # seconds before its walltime the job wants SIGUSR2


@dataclass(frozen=True)
class Rule:
    """How a backend renders some resource keys (or submission fields) as directives.

    ``render(backend, spec)`` returns option strings such as ``"--time=01:00:00"`` (the
    backend puts its directive prefix before each) or whole lines starting with ``#``;
    an empty list when the keys are unset. ``keys`` names what the rule reads, so that the
    help (``hpcexec resources``) shows each key's rendering from the very same rules."""

    keys: tuple[str, ...]
    render: Callable[[Any, SubmitSpec], list[str]]


def rule(*keys: str) -> Callable[[Callable[[Any, SubmitSpec], list[str]]], Rule]:
    """Decorator form: ``@rule("time")`` over ``def f(backend, spec) -> list[str]``."""
    return lambda render: Rule(keys, render)


def option(key: str, fmt: Callable[[Any], str]) -> Rule:
    """A rule rendering one resource key as one option when it is set."""
    return Rule((key,), lambda b, spec: [fmt(v)] if (v := getattr(spec.res, key)) else [])


def error_option(fmt: Callable[[str], str]) -> Rule:
    """The standard error file's option, left out when ``join_output`` sends standard error
    to the standard output file."""
    return Rule(
        ("stderr", "join_output"),
        lambda b, spec: [] if spec.res.join_output else [fmt(spec.stderr)],
    )


def stdin_option(fmt: Callable[[str], str]) -> Rule:
    """The ``stdin`` option, given the input path made absolute against the workdir."""
    return Rule(
        ("stdin",), lambda b, spec: [fmt(under(spec.workdir, v))] if (v := spec.res.stdin) else []
    )


def mail_options(user: str, events: str, names: Mapping[str, str], sep: str = "") -> Rule:
    """``mail`` as a recipient option and an events option: ``user + address`` and
    ``events`` followed by each event's name in ``names``, joined by ``sep``."""

    def render(b: Any, spec: SubmitSpec) -> list[str]:
        m = spec.res.mail
        return [user + m.to, events + sep.join(names[e] for e in m.on)] if m else []

    return Rule(("mail",), render)


def hold_option(flag: str) -> Rule:
    """The flag submitting a job held."""
    return Rule(("hold",), lambda b, spec: [flag] if spec.hold else [])


def warning_option(render: Callable[[int], list[str]]) -> Rule:
    """The options asking for SIGUSR2 ``spec.warning`` seconds ahead of the walltime (and on
    preemption where the scheduler sends it then): see :mod:`hpcexec.checkpoint`."""
    return Rule(("warning",), lambda b, spec: render(spec.warning) if spec.warning else [])


def array_range(spec: SubmitSpec) -> str | None:
    """``0-<n-1>`` with ``%<limit>``: the element range of an array counted from 0 (SLURM,
    PBS Pro, Torque); None for a single job."""
    if spec.array_size is None:
        return None
    limit = f"%{spec.array_limit}" if spec.array_limit else ""
    return f"0-{spec.array_size - 1}{limit}"


#: raw directives passed through: bare options get the prefix, ``#...`` lines stay as written
NATIVE = Rule(("native",), lambda b, spec: list(spec.res.native))


class SchedulerBackend(Backend):
    """A batch scheduler's dialect. Every method is pure: argv and script lines out, parsed
    values in. The driver (:mod:`hpcexec.schedqueue`) runs them through the transport."""

    #: commands whose presence on PATH means this scheduler is installed
    commands: ClassVar[tuple[str, ...]] = ()
    #: commands of other schedulers that share ours (``qsub``): on PATH, ours are theirs
    others: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def found_with(cls, which: Callable[[str], str | None]) -> str | None:
        """None if this scheduler's commands are on PATH (``which`` finds them), else why
        not: the commands missing, or another scheduler's command that says those are its."""
        missing = [c for c in cls.commands if not which(c)]
        if missing:
            return f"{', '.join(missing)} not on PATH"
        theirs = [c for c in cls.others if which(c)]
        if theirs:
            return f"{theirs[0]} is on PATH: {', '.join(cls.commands)} are another scheduler's"
        return None

    #: the largest array when the cluster's own limit cannot be read
    default_max_array: ClassVar[int] = 1000
    #: True when a job's stdout and stderr files are written as it runs (SLURM, Grid Engine),
    #: not copied into place after it ended (PBS and LSF spool them): only then may a client
    #: take the job's exit-code file for its end before the scheduler lists it ended
    output_live: ClassVar[bool] = False
    #: how output paths name the array element, e.g. ``%a`` (SLURM)
    array_index_pattern: ClassVar[str]
    #: a shell expression giving the 0-based array element index inside the job
    array_index_expr: ClassVar[str]
    #: True when the submit command reads the script on standard input (LSF's ``bsub <``)
    submit_stdin: ClassVar[bool] = False
    #: the directive prefix when the scheduler reads directive lines anywhere in a script, not
    #: only in its leading comments (Grid Engine's ``#$``): a single job's script that holds
    #: such a line is then run from its own file rather than inlined under the directives
    directives_anywhere: ClassVar[str | None] = None
    #: what ``array_index_pattern`` gives the first element (0: SLURM; 1: SGE, whose task ids
    #: start at 1); the driver names element ``i``'s output ``i + array_index_base``
    array_index_base: ClassVar[int] = 0

    #: what the submit command prints when the scheduler refuses a job for a limit on the jobs a
    #: user (or group, account) may have queued: regular expressions, tried in order and
    #: case-insensitive, whose first group (else the whole match) names the limit
    submit_limits: ClassVar[tuple[str, ...]] = ()
    #: what it prints when an array has more elements than the cluster takes (a regular
    #: expression; None: nothing known)
    array_too_large: ClassVar[str | None] = None

    #: the directive prefix, e.g. ``#SBATCH``
    prefix: ClassVar[str] = ""
    #: the dialect: every directive of a submission comes from these rules, in this order
    #: (a backend may instead override :meth:`directives`)
    rules: ClassVar[tuple[Rule, ...]] = ()

    def directives(self, spec: SubmitSpec) -> list[str]:
        """The ``#XXX`` directive lines for a submission: :attr:`rules`, in order."""
        return self.render_rules(self.rules, spec)

    def render_rules(self, rules: tuple[Rule, ...], spec: SubmitSpec) -> list[str]:
        return [
            o if o.startswith("#") else f"{self.prefix} {o}"
            for r in rules
            for o in r.render(self, spec)
        ]

    def rules_for(self, key: str) -> tuple[Rule, ...]:
        """The rules that read ``key``."""
        return tuple(r for r in self.rules if key in r.keys)

    @abc.abstractmethod
    def submit_argv(self, spec: SubmitSpec) -> list[str]: ...

    @abc.abstractmethod
    def parse_submit(self, out: str) -> str:
        """The job id (of the array as a whole, for arrays) from the submit command's output."""

    @abc.abstractmethod
    def element_id(self, array_id: str, index: int) -> str:
        """The id of element ``index`` of array ``array_id``."""

    @abc.abstractmethod
    def status_argv(self, job_ids: list[str]) -> list[str]:
        """One command asking about many jobs (the live queue)."""

    @abc.abstractmethod
    def parse_status(self, out: str, err: str, returncode: int) -> dict[str, JobStatus]:
        """Parse the status command. Raise :class:`~hpcexec.errors.SchedulerOutputError` when
        the command failed as a whole (controller down) or its output cannot be read: jobs
        then keep their last state."""

    def memory_kill(self, stderr: str) -> str | None:
        """What the scheduler wrote into a killed job's stderr when it killed it for passing
        its memory limit (None: nothing of the kind)."""
        return None

    def accounting_argv(self, job_ids: list[str]) -> list[str] | None:
        """A command asking accounting about jobs that left the queue (None: no accounting)."""
        return None

    def parse_accounting(self, out: str) -> dict[str, JobStatus]:
        return {}

    def describe_argv(self, job_id: str) -> list[str] | None:
        """A command telling a job's name, output files and working directory, for adopting
        a job started outside hpcexec (None: the scheduler has none hpcexec reads)."""
        return None

    def parse_described(self, out: str) -> dict[str, str]:
        """``describe_argv``'s answer as ``name``, ``stdout``, ``stderr``, ``workdir``
        (those known)."""
        return {}

    @abc.abstractmethod
    def cancel_argv(self, job_ids: list[str]) -> list[str]: ...

    def hold_argv(self, job_ids: list[str]) -> list[str]:
        raise BackendError(f"{self.name} cannot hold jobs")

    def release_argv(self, job_ids: list[str]) -> list[str]:
        raise BackendError(f"{self.name} cannot release jobs")

    def suspend_argv(self, job_ids: list[str]) -> list[str]:
        raise BackendError(f"{self.name} cannot suspend jobs")

    def resume_argv(self, job_ids: list[str]) -> list[str]:
        raise BackendError(f"{self.name} cannot resume jobs")

    def find_argv(self) -> list[str] | None:
        """A command listing this user's queued jobs with their scripts (for recovery)."""
        return None

    def parse_find(self, out: str) -> dict[str, str]:
        """Script path -> job id (of the array as a whole), from :meth:`find_argv`'s output."""
        return {}

    def submit_limit(self, out: str) -> str | None:
        """The name of the limit on queued jobs that a refusal reports, from the submit
        command's output (both streams); None when it was refused for something else."""
        for pattern in self.submit_limits:
            m = re.search(pattern, out, re.I)
            if m:
                return (m.group(1) if m.groups() else m.group(0)).strip()
        return None

    def refused_array_size(self, out: str) -> bool:
        """Whether a refusal says the array had more elements than the cluster takes."""
        return bool(self.array_too_large and re.search(self.array_too_large, out, re.I))

    def submit_limit_argv(self) -> list[str] | None:
        """A command whose output tells the most jobs this user may have queued (None: the
        limit is learned from refusals only)."""
        return None

    def parse_submit_limit(self, out: str, native: tuple[str, ...]) -> int | None:
        """From :meth:`submit_limit_argv`'s output, the most jobs this user may have queued
        for jobs with these ``native`` directives (None: no limit found)."""
        return None

    def max_array_argv(self) -> list[str] | None:
        """A command whose output tells the cluster's largest array (None: use the default)."""
        return None

    def parse_max_array(self, out: str) -> int | None:
        return None


def own_output(stdout: str, stderr: str, workdir: str) -> str:
    """A line sending the job script's stdout and stderr to the job's own files."""
    out, err, q = under(workdir, stdout), under(workdir, stderr), shlex.quote
    return f"exec >{q(out)} 2>&1" if out == err else f"exec >{q(out)} 2>{q(err)}"
