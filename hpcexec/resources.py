"""The common resource model: one validated description of what a job asks for.

Every backend renders these fields in its own dialect. Values are parsed and checked
here, once, so that a bad value is refused before anything is written or submitted.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import resourcevalues as rv
from .errors import ResourceError
from .options import NAMES as JOB_OPTIONS  # the fields of JobOptions
from .resourcevalues import (  # the forms other modules read through this one
    Mail,
    format_time,
    parse_mem,
    parse_time,
)

_int0 = rv.positive_int(0)


@dataclass(frozen=True)
class ResourceSpec:
    """One row of the resource table: what a key means and how its value is read."""

    key: str
    kind: str
    doc: str
    parse: Callable[[Any], Any]
    example: Any  # a value shown by ``hpcexec resources``, rendered by every backend


RESOURCE_TABLE: dict[str, ResourceSpec] = {
    s.key: s
    for s in [
        ResourceSpec("name", "str", "job name shown by the scheduler", rv.any_text, "analysis"),
        ResourceSpec("queue", "str", "queue or partition", rv.word, "debug"),
        ResourceSpec(
            "time",
            "walltime",
            "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, timedelta, or int minutes",
            parse_time,
            "1:30:00",
        ),
        ResourceSpec(
            "soft_time",
            "walltime",
            "a soft wallclock limit below time, as DRMAA's: Grid Engine sends SIGUSR1 at it "
            "(s_rt), LSF takes it as the estimated run time (-We); same forms as time",
            parse_time,
            "1:20:00",
        ),
        ResourceSpec("nodes", "int>=1", "number of nodes", rv.positive_int(1), 2),
        ResourceSpec("ppn", "int>=1", "processes (tasks) per node", rv.positive_int(1), 4),
        ResourceSpec("threads", "int>=1", "threads (cores) per process", rv.positive_int(1), 2),
        ResourceSpec(
            "mpi",
            "str",
            "MPI flavour of the task launcher of a multi-task callable: SLURM's srun --mpi=VALUE "
            "(default: the site's MpiDefault)",
            rv.word,
            "pmix",
        ),
        ResourceSpec(
            "mem", "memory", "memory per node: '4GB', '500M', '1.5G', or int MiB", parse_mem, "4GB"
        ),
        ResourceSpec(
            "gpus", "int>=0", "GPUs per node, shared by its tasks (or gpus_per_task)", _int0, 1
        ),
        ResourceSpec("gpus_per_task", "int>=0", "GPUs of each task, its own (or gpus)", _int0, 1),
        ResourceSpec("account", "str", "account (project) to charge", rv.word, "proj42"),
        ResourceSpec(
            "stdout", "path", "file for the job's standard output", rv.any_text, "out.txt"
        ),
        ResourceSpec("stderr", "path", "file for the job's standard error", rv.any_text, "err.txt"),
        ResourceSpec(
            "env",
            "mapping",
            "environment variables set in the job",
            rv.env_pairs,
            {"OMP_NUM_THREADS": "4"},
        ),
        ResourceSpec("workdir", "path", "directory the job runs in", rv.any_text, "/scratch/run1"),
        ResourceSpec(
            "native",
            "list[str]",
            "raw scheduler directives passed through",
            rv.native_words,
            "--exclusive",
        ),
        ResourceSpec(
            "mail",
            "mail",
            "mail about the job: 'ADDRESS' (when it ends), "
            "'ADDRESS:EVENT,...', or {'to': ADDRESS, 'on': [EVENT, ...]}; events "
            "begin, end, fail, all",
            rv.mail_spec,
            {"to": "me@example.org", "on": ["begin", "end"]},
        ),
        ResourceSpec(
            "begin",
            "time",
            "earliest start: datetime (naive: local time), ISO 8601 "
            "string, timedelta from now, or '+' and a walltime ('+30', '+2:00:00')",
            rv.instant(round_up=True),
            "2030-01-31T18:00:00",
        ),
        ResourceSpec(
            "deadline",
            "time",
            "the job must not run after this time (a job not "
            "started by then never starts): same forms as begin",
            rv.instant(round_up=False),
            "2030-02-01T06:00:00",
        ),
        ResourceSpec(
            "stdin", "path", "file read as the job's standard input", rv.any_text, "in.txt"
        ),
        ResourceSpec(
            "join_output", "bool", "standard error into the standard output file", rv.flag, True
        ),
    ]
}
#: where, how long and with what a job may run: a re-run with more reuses every finished result
SCHEDULING = ("queue", "account", "time", "soft_time", "mem", "gpus", "gpus_per_task", "native")
#: keys that say when and whom to tell, and the scheduling, not what a job computes: not part
#: of cache keys (unless a job's text fills one in as a ``{placeholder}``)
NOT_IN_CACHE_KEY = ("name", "mail", "begin", "deadline", *SCHEDULING)


def _unknown(key: str, valid: list[str], what: str) -> ResourceError:
    import difflib

    close = difflib.get_close_matches(key, [*valid, *ALIASES], n=1)
    hint = f" Did you mean {ALIASES.get(close[0], close)[0]!r}?" if close else ""
    return ResourceError(f"unknown {what} {key!r}.{hint} Valid ones: {', '.join(valid)}.")


@dataclass(frozen=True)
class Resources:
    """What one job asks for. Build it with :meth:`create` so values are checked."""

    name: str | None = None
    queue: str | None = None
    time: int | None = None  # seconds
    soft_time: int | None = None  # seconds
    nodes: int | None = None
    ppn: int | None = None
    threads: int | None = None
    mpi: str | None = None
    mem: int | None = None  # MiB
    gpus: int | None = None  # per node
    gpus_per_task: int | None = None
    account: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    workdir: str | None = None
    native: tuple[str, ...] = field(default_factory=tuple)
    mail: Mail | None = None
    begin: str | None = None  # UTC, YYYY-MM-DDTHH:MM:SSZ
    deadline: str | None = None  # UTC, YYYY-MM-DDTHH:MM:SSZ
    stdin: str | None = None
    join_output: bool | None = None  # True, or None

    @classmethod
    def create(cls, **values: Any) -> Resources:
        return cls().replace(**values)

    def replace(self, **values: Any) -> Resources:
        """A copy with ``values`` parsed and checked; ``None`` clears a key."""
        parsed: dict[str, Any] = {}
        for key, value in values.items():
            spec = RESOURCE_TABLE.get(key)
            if spec is None:
                raise _unknown(key, list(RESOURCE_TABLE), "resource")
            if value is None:
                parsed[key] = () if key in ("env", "native") else None
                continue
            try:
                parsed[key] = spec.parse(value)
            except ValueError as e:
                raise ResourceError(f"bad value {value!r} for resource {key!r}: {e}") from None
        _one_gpu_key(parsed)
        new = dataclasses.replace(self, **parsed)
        if new.soft_time and new.time and new.soft_time >= new.time:
            raise ResourceError(
                f"soft_time {format_time(new.soft_time)} is not below time "
                f"{format_time(new.time)}: a soft limit warns before the hard one. "
                "Lower soft_time or raise time."
            )
        if new.begin and new.deadline and new.deadline <= new.begin:
            raise ResourceError(
                f"deadline {new.deadline} is not after begin {new.begin}: the "
                "job could never run. Move the deadline later or begin earlier."
            )
        return new

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Resources:
        """Rebuild from :meth:`to_dict` output (values already parsed: seconds, MiB)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in values.items() if k in fields}
        if "env" in d:
            d["env"] = tuple(sorted(dict(d["env"]).items()))
        if "native" in d:
            d["native"] = tuple(d["native"])
        if isinstance(d.get("mail"), Mapping):
            d["mail"] = Mail(d["mail"]["to"], tuple(d["mail"].get("on", ("end",))))
        return cls(**d)

    @property
    def cores(self) -> int:
        """Cores the job occupies on one node: threads x processes per node."""
        return (self.threads or 1) * (self.ppn or 1)

    @property
    def gpus_per_node(self) -> int:
        """GPUs the job uses on each node: ``gpus``, or ``gpus_per_task`` x ``ppn``."""
        return node_gpu_count(self.to_dict())

    @property
    def ntasks(self) -> int:
        """Tasks of the job: nodes x processes per node (a callable runs once in each)."""
        return task_count(self.to_dict())

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    def to_dict(self) -> dict[str, Any]:
        """The set fields, in a JSON-friendly form."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None or v == ():
                continue
            if f.name == "env":
                v = dict(v)
            elif f.name == "native":
                v = list(v)
            elif isinstance(v, Mail):
                v = v.to_dict()
            out[f.name] = v
        return out

    def canonical(self, keep: Iterable[str] = ()) -> str:
        """Stable text for cache keys: without the keys that do not change what a job
        computes (:data:`NOT_IN_CACHE_KEY`), except those in ``keep`` (the placeholders a
        job's text fills in)."""
        d = self.to_dict()
        for key in set(NOT_IN_CACHE_KEY).difference(keep):
            d.pop(key, None)
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    def placeholders(self) -> dict[str, str]:
        """Values for ``{key}`` placeholders in job bodies."""
        out = {}
        for k, v in self.to_dict().items():
            if k in ("env", "native", "join_output"):
                continue
            timed = k in ("time", "soft_time")
            out[k] = format_time(v) if timed else v["to"] if k == "mail" else str(v)
        out.setdefault("threads", "1")
        out.setdefault("ppn", "1")
        out.setdefault("nodes", "1")
        out["cores"] = str(self.cores)
        out["ntasks"] = str(self.ntasks)
        return out


def task_count(resources: Mapping[str, Any]) -> int:
    """The number of tasks of a job from its (record's) resources: nodes x ppn."""
    return int(resources.get("nodes") or 1) * int(resources.get("ppn") or 1)


def node_gpu_count(resources: Mapping[str, Any]) -> int:
    """GPUs per node of a job from its (record's) resources: ``gpus``, else
    ``gpus_per_task`` x ``ppn`` (the one rule for backends that cannot say per task)."""
    if resources.get("gpus") is not None:
        return int(resources["gpus"])
    return int(resources.get("gpus_per_task") or 0) * int(resources.get("ppn") or 1)


def _one_gpu_key(parsed: dict[str, Any]) -> None:
    """Refuse ``gpus`` and ``gpus_per_task`` given together; giving one clears the other
    (so a view's ``gpus_per_task`` replaces its executor's ``gpus``)."""
    given = [k for k in ("gpus", "gpus_per_task") if parsed.get(k) is not None]
    if len(given) == 2:
        raise ResourceError(
            "give gpus or gpus_per_task, not both: gpus is the GPUs of each node, shared by "
            "its ppn tasks; gpus_per_task gives each task its own (a node has gpus_per_task "
            "x ppn). Keep the one that says what your tasks use."
        )
    if given:
        parsed["gpus_per_task" if given == ["gpus"] else "gpus"] = None


#: names other tools give a resource (submitit, SLURM, PBS, dask-jobqueue): hpcexec's name,
#: and the value in its terms. Taken with a warning that names hpcexec's.
ALIASES: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "cpus": ("threads", lambda v: v),
    "cpus_per_task": ("threads", lambda v: v),
    "mem_gb": ("mem", lambda v: f"{v}GB"),
    "timeout_min": ("time", lambda v: v),  # minutes, as an int time is
    "walltime": ("time", lambda v: v),
}


def _unalias(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with other tools' names for resources replaced by hpcexec's."""
    out = dict(values)
    for alias, (name, convert) in ALIASES.items():
        if alias not in out:
            continue
        if name in out:
            raise ResourceError(f"{alias!r} and {name!r} name the same resource: give {name!r}")
        out[name] = convert(out.pop(alias))
        warnings.warn(
            f"{alias}={values[alias]!r} is taken as {name}={out[name]!r}: hpcexec calls it "
            f"{name!r}",
            stacklevel=4,
        )
    return out


def split_options(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword arguments into resources and job options, refusing unknown names
    (other tools' names for a resource, :data:`ALIASES`, are taken with a warning)."""
    res: dict[str, Any] = {}
    opts: dict[str, Any] = {}
    valid = list(RESOURCE_TABLE) + list(JOB_OPTIONS)
    for k, v in _unalias(values).items():
        if k in RESOURCE_TABLE:
            res[k] = v
        elif k in JOB_OPTIONS:
            opts[k] = v
        else:
            raise _unknown(k, valid, "resource or job option")
    taken = sorted(set(opts.get("vars") or ()) & set(RESOURCE_TABLE))
    if taken:
        raise ResourceError(
            f"vars name {taken[0]!r} is hpcexec's own placeholder: give the resource "
            f"{taken[0]}=... instead, or choose another name"
        )
    return res, opts
