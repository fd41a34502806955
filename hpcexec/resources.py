"""The common resource model: one validated description of what a job asks for.

Every backend renders these fields in its own dialect. Values are parsed and checked
here, once, so that a bad value is refused before anything is written or submitted.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Mapping

from .errors import ResourceError

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
    return int(math.ceil(seconds))


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
            raise ValueError("use a number with an optional unit K, M, G, T or P (e.g. '4GB', '500M')")
        mb = float(m["num"]) * _MEM_FACTOR[(m["unit"] or "").lower()]
    else:
        raise ValueError(f"a memory string or int of MiB, not {type(value).__name__}")
    if mb <= 0:
        raise ValueError("memory must be more than zero")
    return int(math.ceil(mb))


def _positive_int(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            else:
                raise ValueError(f"a whole number >= {minimum}, not {value!r}")
        if value < minimum:
            raise ValueError(f"a whole number >= {minimum}, not {value}")
        return value

    return parse


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a non-empty string")
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise ValueError("a string without newlines or control characters")
    return value


def _word(value: Any) -> str:
    value = _text(value)
    if not _WORD_RE.match(value):
        raise ValueError("letters, digits and . _ - @ + : / = only")
    return value


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


@dataclass(frozen=True)
class ResourceSpec:
    """One row of the resource table: what a key means and how its value is read."""

    key: str
    kind: str
    doc: str
    parse: Callable[[Any], Any]


RESOURCE_TABLE: dict[str, ResourceSpec] = {
    s.key: s
    for s in [
        ResourceSpec("name", "str", "job name shown by the scheduler", _text),
        ResourceSpec("queue", "str", "queue or partition", _word),
        ResourceSpec("time", "walltime", "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, "
                     "timedelta, or int minutes", parse_time),
        ResourceSpec("nodes", "int>=1", "number of nodes", _positive_int(1)),
        ResourceSpec("ppn", "int>=1", "processes (tasks) per node", _positive_int(1)),
        ResourceSpec("threads", "int>=1", "threads (cores) per process", _positive_int(1)),
        ResourceSpec("mem", "memory", "memory per node: '4GB', '500M', '1.5G', or int MiB", parse_mem),
        ResourceSpec("gpus", "int>=0", "GPUs per node", _positive_int(0)),
        ResourceSpec("account", "str", "account (project) to charge", _word),
        ResourceSpec("stdout", "path", "file for the job's standard output", _text),
        ResourceSpec("stderr", "path", "file for the job's standard error", _text),
        ResourceSpec("env", "mapping", "environment variables set in the job", _env),
        ResourceSpec("workdir", "path", "directory the job runs in", _text),
        ResourceSpec("native", "list[str]", "raw scheduler directives passed through", _native),
    ]
}


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
    mem: int | None = None  # MiB
    gpus: int | None = None
    account: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    workdir: str | None = None
    native: tuple[str, ...] = field(default_factory=tuple)

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
        return dataclasses.replace(self, **parsed)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Resources:
        """Rebuild from :meth:`to_dict` output (values already parsed: seconds, MiB)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in values.items() if k in fields}
        if "env" in d:
            d["env"] = tuple(sorted(dict(d["env"]).items()))
        if "native" in d:
            d["native"] = tuple(d["native"])
        return cls(**d)

    @property
    def cores(self) -> int:
        """Cores the job occupies on one node: threads x processes per node."""
        return (self.threads or 1) * (self.ppn or 1)

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
            out[f.name] = dict(v) if f.name == "env" else list(v) if f.name == "native" else v
        return out

    def canonical(self) -> str:
        """Stable text for cache keys (the job name is not part of what a job computes)."""
        d = self.to_dict()
        d.pop("name", None)
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    def placeholders(self) -> dict[str, str]:
        """Values for ``{key}`` placeholders in job bodies."""
        out = {}
        for k, v in self.to_dict().items():
            if k in ("env", "native"):
                continue
            out[k] = format_time(v) if k == "time" else str(v)
        out.setdefault("threads", "1")
        out.setdefault("ppn", "1")
        out.setdefault("nodes", "1")
        out["cores"] = str(self.cores)
        return out


JOB_OPTIONS = ("key", "force", "retry", "hold", "after", "array_limit", "reuse_slots")


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
