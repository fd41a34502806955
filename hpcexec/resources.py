"""The common resource model: one validated description of what a job asks for.

Every backend renders these fields in its own dialect. Values are parsed and checked
here, once, so that a bad value is refused before anything is written or submitted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from .errors import ResourceError
from .isotime import parse_iso_datetime
from .mail import Mail, parse_mail
from .options import NAMES as JOB_OPTIONS  # the fields of JobOptions

_TIME_RE = re.compile(
    r"""^(?:(?P<days>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?   # D-HH[:MM[:SS]]
        |(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)$                    # MM | MM:SS | HH:MM:SS
    """,
    re.X,
)
_MEM_RE = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?:(?P<unit>[kmgtp])(?:i?b)?)?\s*$", re.I)
_MEM_FACTOR = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024**2, "p": 1024**3}
_WORD_RE = re.compile(r"^[\w.@+:/=-]+$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INSTANT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_YES, _NO = ("1", "true", "yes", "y", "on"), ("0", "false", "no", "n", "off")


def parse_time(value: Any) -> int:
    """Walltime in seconds from ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``,
    ``D-HH:MM:SS``, a :class:`~datetime.timedelta`, or an int of minutes."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError("a walltime, not a bool")
    elif isinstance(value, int):
        seconds = value * 60
    elif isinstance(value, str):
        m = _TIME_RE.match(value.strip())
        if not m:
            raise ValueError(
                "use MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (e.g. '2:00:00' or '1-12')"
            )
        g = {k: int(v) for k, v in m.groupdict().items() if v is not None}
        if "days" in g:
            seconds = g["days"] * 86400 + g["dh"] * 3600 + g.get("dm", 0) * 60 + g.get("ds", 0)
        elif "c" in g:
            seconds = g["a"] * 3600 + g["b"] * 60 + g["c"]
        elif "b" in g:
            seconds = g["a"] * 60 + g["b"]
        else:
            seconds = g["a"] * 60
    else:
        raise ValueError(f"a walltime string, int minutes or timedelta, not {type(value).__name__}")
    if seconds <= 0:
        raise ValueError("a walltime must be longer than zero")
    return math.ceil(seconds)


def format_time(seconds: int) -> str:
    """``HH:MM:SS`` (hours may exceed 24), the form every scheduler accepts."""
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


def parse_mem(value: Any) -> int:
    """Memory in MiB from ``4GB``, ``500M``, ``1.5G``, ``2048K`` or an int of MiB."""
    if isinstance(value, bool):
        raise ValueError("a memory size, not a bool")
    if isinstance(value, int):
        mb = float(value)
    elif isinstance(value, str):
        m = _MEM_RE.match(value)
        if not m:
            raise ValueError(
                "use a number with an optional unit K, M, G, T or P (e.g. '4GB', '500M')"
            )
        mb = float(m["num"]) * _MEM_FACTOR[(m["unit"] or "").lower()]
    else:
        raise ValueError(f"a memory string or int of MiB, not {type(value).__name__}")
    if mb <= 0:
        raise ValueError("memory must be more than zero")
    return math.ceil(mb)


def _positive_int(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            else:
                raise ValueError(f"a whole number >= {minimum}, not {value!r}")
        if value < minimum:
            raise ValueError(f"a whole number >= {minimum}, not {value}")
        return int(value)

    return parse


_int0 = _positive_int(0)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a non-empty string")
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise ValueError("a string without newlines or control characters")
    return value


def _word(value: Any) -> str:
    word = _text(value)
    if not _WORD_RE.match(word):
        raise ValueError("letters, digits and . _ - @ + : / = only")
    return word


def _env(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise ValueError("a mapping of variable names to strings")
    out = []
    for k, v in value.items():
        if not isinstance(k, str) or not _ENV_NAME_RE.match(k):
            raise ValueError(f"{k!r} is not a valid environment variable name")
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise ValueError(f"the value of {k} must be a string or number, not {type(v).__name__}")
        v = str(v)
        if "\0" in v:
            raise ValueError(f"the value of {k} contains a NUL byte")
        out.append((k, v))
    return tuple(sorted(out))


def _native(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError("a directive string or a list of them")
    return tuple(_text(v) for v in value)


def _flag(value: Any) -> bool | None:
    """True, or None for false (so that an unset flag and ``False`` are one cache key)."""
    if isinstance(value, str) and value.strip().lower() in (*_YES, *_NO):
        value = value.strip().lower() in _YES
    if not isinstance(value, bool):
        raise ValueError(f"True or False, not {value!r}")
    return True if value else None


def _instant(round_up: bool) -> Callable[[Any], str]:
    """A point in time as UTC text ``YYYY-MM-DDTHH:MM:SSZ``, from a ``datetime`` (naive:
    local time), an ISO 8601 string, a ``timedelta`` from now, or ``'+'`` and a walltime
    (``'+30'``: in 30 minutes, ``'+1:00:00'``: in an hour). Fractions of a second are
    rounded ``round_up`` (a start never earlier) or down (a deadline never later)."""

    def parse(value: Any) -> str:
        if isinstance(value, str) and value.strip().startswith("+"):
            value = timedelta(seconds=parse_time(value.strip()[1:]))
        if isinstance(value, timedelta):
            if value < timedelta(0):
                raise ValueError("a delay cannot be negative")
            when = datetime.now(timezone.utc) + value
        elif isinstance(value, datetime):
            when = value
        elif isinstance(value, date):
            when = datetime(value.year, value.month, value.day)
        elif isinstance(value, str):
            text = value.strip()
            try:
                when = parse_iso_datetime(text)
            except ValueError:
                raise ValueError(
                    "use an ISO 8601 time such as '2030-01-31T18:00' or "
                    "'2030-01-31 18:00+01:00', or '+' and a delay such as "
                    "'+30' (minutes) or '+2:00:00'"
                ) from None
        else:
            raise ValueError(
                f"a datetime, an ISO 8601 string or a timedelta, not {type(value).__name__}"
            )
        when = when.astimezone(timezone.utc)  # a naive time is this machine's local time
        if when.microsecond:
            when = when.replace(microsecond=0) + (
                timedelta(seconds=1) if round_up else timedelta(0)
            )
        return when.strftime(_INSTANT_FORMAT)

    return parse


def instant_epoch(text: str) -> float:
    """Seconds since the epoch of a canonical ``begin`` or ``deadline``."""
    return datetime.strptime(text, _INSTANT_FORMAT).replace(tzinfo=timezone.utc).timestamp()


def local_time(text: str) -> datetime:
    """A canonical ``begin`` or ``deadline`` in this machine's local time (naive): the form
    the schedulers' submit commands read."""
    return datetime.fromtimestamp(instant_epoch(text))


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
        ResourceSpec("name", "str", "job name shown by the scheduler", _text, "analysis"),
        ResourceSpec("queue", "str", "queue or partition", _word, "debug"),
        ResourceSpec(
            "time",
            "walltime",
            "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, timedelta, or int minutes",
            parse_time,
            "1:30:00",
        ),
        ResourceSpec("nodes", "int>=1", "number of nodes", _positive_int(1), 2),
        ResourceSpec("ppn", "int>=1", "processes (tasks) per node", _positive_int(1), 4),
        ResourceSpec("threads", "int>=1", "threads (cores) per process", _positive_int(1), 2),
        ResourceSpec(
            "mpi",
            "str",
            "MPI flavour of the task launcher of a multi-task callable: SLURM's srun --mpi=VALUE "
            "(default: the site's MpiDefault)",
            _word,
            "pmix",
        ),
        ResourceSpec(
            "mem", "memory", "memory per node: '4GB', '500M', '1.5G', or int MiB", parse_mem, "4GB"
        ),
        ResourceSpec(
            "gpus", "int>=0", "GPUs per node, shared by its tasks (or gpus_per_task)", _int0, 1
        ),
        ResourceSpec("gpus_per_task", "int>=0", "GPUs of each task, its own (or gpus)", _int0, 1),
        ResourceSpec("account", "str", "account (project) to charge", _word, "proj42"),
        ResourceSpec("stdout", "path", "file for the job's standard output", _text, "out.txt"),
        ResourceSpec("stderr", "path", "file for the job's standard error", _text, "err.txt"),
        ResourceSpec(
            "env", "mapping", "environment variables set in the job", _env, {"OMP_NUM_THREADS": "4"}
        ),
        ResourceSpec("workdir", "path", "directory the job runs in", _text, "/scratch/run1"),
        ResourceSpec(
            "native", "list[str]", "raw scheduler directives passed through", _native, "--exclusive"
        ),
        ResourceSpec(
            "mail",
            "mail",
            "mail about the job: 'ADDRESS' (when it ends), "
            "'ADDRESS:EVENT,...', or {'to': ADDRESS, 'on': [EVENT, ...]}; events "
            "begin, end, fail, all",
            parse_mail,
            {"to": "me@example.org", "on": ["begin", "end"]},
        ),
        ResourceSpec(
            "begin",
            "time",
            "earliest start: datetime (naive: local time), ISO 8601 "
            "string, timedelta from now, or '+' and a walltime ('+30', '+2:00:00')",
            _instant(round_up=True),
            "2030-01-31T18:00:00",
        ),
        ResourceSpec(
            "deadline",
            "time",
            "the job must not run after this time (a job not "
            "started by then never starts): same forms as begin",
            _instant(round_up=False),
            "2030-02-01T06:00:00",
        ),
        ResourceSpec("stdin", "path", "file read as the job's standard input", _text, "in.txt"),
        ResourceSpec(
            "join_output", "bool", "standard error into the standard output file", _flag, True
        ),
    ]
}
#: keys that say when and whom to tell, not what a job computes: not part of cache keys
NOT_IN_CACHE_KEY = ("name", "mail", "begin", "deadline")


def _unknown(key: str, valid: list[str], what: str) -> ResourceError:
    import difflib

    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ResourceError(f"unknown {what} {key!r}.{hint} Valid ones: {', '.join(valid)}.")


@dataclass(frozen=True)
class Resources:
    """What one job asks for. Build it with :meth:`create` so values are checked."""

    name: str | None = None
    queue: str | None = None
    time: int | None = None  # seconds
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

    def canonical(self) -> str:
        """Stable text for cache keys: without the keys that do not change what a job
        computes (:data:`NOT_IN_CACHE_KEY`)."""
        d = self.to_dict()
        for key in NOT_IN_CACHE_KEY:
            d.pop(key, None)
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    def placeholders(self) -> dict[str, str]:
        """Values for ``{key}`` placeholders in job bodies."""
        out = {}
        for k, v in self.to_dict().items():
            if k in ("env", "native", "join_output"):
                continue
            out[k] = format_time(v) if k == "time" else v["to"] if k == "mail" else str(v)
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


def split_options(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword arguments into resources and job options, refusing unknown names."""
    res: dict[str, Any] = {}
    opts: dict[str, Any] = {}
    valid = list(RESOURCE_TABLE) + list(JOB_OPTIONS)
    for k, v in values.items():
        if k in RESOURCE_TABLE:
            res[k] = v
        elif k in JOB_OPTIONS:
            opts[k] = v
        else:
            raise _unknown(k, valid, "resource or job option")
    return res, opts
