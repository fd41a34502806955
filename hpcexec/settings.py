"""Executor settings: how a client reaches its jobs (backend, cache, host, SSH, polling,
throttling), as the fields of one :class:`ExecutorSettings`, listed here once with their
built-in defaults and a line of documentation each.

The Executor's keyword arguments, the keys a profile may hold (:mod:`hpcexec.config`), the
command line's and the adapters' lists of settings are these fields (:data:`NAMES`); a
test keeps ``Executor.__init__``'s parameters equal to them.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: the client's environment variable giving the local backend's GPUs when local_gpus is unset
ENV_LOCAL_GPUS = "HPCEXEC_LOCAL_GPUS"
_GPU_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_:.-]*$")


def _about(doc: str, *, reach: bool = False) -> dict[str, Any]:
    """A field's metadata: ``doc`` says what it sets; ``reach``: it says how to reach a host
    (so it is taken over, for that host, from a profile naming it)."""
    return {"doc": doc, "reach": reach}


@dataclass(frozen=True)
class ExecutorSettings:
    """The effective settings of an Executor (see :class:`hpcexec.Executor` for each one's
    meaning; ``dataclasses.fields`` gives each one's default and, in its ``metadata``, a
    line of ``doc``). Values are checked when the session opens, not here."""

    backend: str = field(default="local", metadata=_about("'local', a scheduler's name or 'auto'"))
    host: str | None = field(
        default=None, metadata=_about("where jobs run: None here, else a host over SSH")
    )
    python: str | None = field(
        default=None, metadata=_about("the interpreter jobs run with", reach=True)
    )
    remote_dir: str | None = field(
        default=None, metadata=_about("on another host, where job files live", reach=True)
    )
    cache_dir: str | os.PathLike = field(
        default=".hpcexec", metadata=_about("where records and results live")
    )
    ssh_key: str | None = field(
        default=None, metadata=_about("a private key file for the SSH login", reach=True)
    )
    known_hosts: str | None = field(
        default=None, metadata=_about("a known-hosts file read too", reach=True)
    )
    trust_on_first_use: bool = field(
        default=False, metadata=_about("accept and save an unknown host key", reach=True)
    )
    poll_interval: float | None = field(
        default=None, metadata=_about("shortest seconds between status polls")
    )
    coalesce: float = field(
        default=0.2, metadata=_about("seconds submit calls are gathered into one array job")
    )
    calls_per_second: float = field(
        default=10.0,
        metadata=_about("the most scheduler commands per second (on average: 3 may go at once)"),
    )
    local_gpus: str | Sequence[str | int] | None = field(
        default=None,
        metadata=_about(
            f"the local backend's GPUs: ids such as '0,1', or 'none' (default: "
            f"${ENV_LOCAL_GPUS}, else what `nvidia-smi -L` lists)"
        ),
    )
    max_queued: int | None = field(
        default=None, metadata=_about("the most jobs kept in a scheduler's queue at once")
    )
    local_cores: int | None = field(
        default=None,
        metadata=_about("the most cores the local backend uses at once (default: all there)"),
    )


_FIELDS = {f.name: f for f in dataclasses.fields(ExecutorSettings)}
#: the setting names, in order: the fields of :class:`ExecutorSettings`
NAMES: tuple[str, ...] = tuple(_FIELDS)
#: the settings that say how to reach a host
REACH: tuple[str, ...] = tuple(n for n, f in _FIELDS.items() if f.metadata["reach"])
#: each setting's built-in default
DEFAULTS: Mapping[str, Any] = MappingProxyType({n: f.default for n, f in _FIELDS.items()})
#: the numeric settings, and whether zero is allowed (coalescing may be off; polling may not)
NUMBERS: Mapping[str, bool] = MappingProxyType(
    {
        "poll_interval": False,
        "coalesce": True,
        "calls_per_second": False,
        "max_queued": False,
        "local_cores": False,
    }
)
#: the numeric settings that take whole numbers only
WHOLE: frozenset[str] = frozenset({"max_queued", "local_cores"})


def number_wanted(name: str, value: Any) -> str | None:
    """For a value of the numeric setting ``name`` that is not allowed, what is wanted
    (``"a positive number"``, ``"a non-negative number"``); None for an allowed one. The one
    rule that the profile check and the Executor's check both apply."""
    zero_ok = NUMBERS[name]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (value < 0 if zero_ok else value <= 0)
        or (name in WHOLE and not isinstance(value, int))
    ):
        if name in WHOLE:
            return "a positive whole number"
        return "a non-negative number" if zero_ok else "a positive number"
    return None


def parse_gpu_ids(value: str | Sequence[str | int]) -> tuple[str, ...]:
    """The GPU ids of a ``local_gpus`` value: ``"0,1,3"`` or a list (ids as ``nvidia-smi`` and
    CUDA number them, or UUIDs), ``"none"`` or ``""`` for none. ValueError saying what is
    wanted: the one rule that the profile check and the session both apply."""
    if isinstance(value, str):
        text = value.strip()
        ids = [] if text.lower() in ("", "none") else [p.strip() for p in text.split(",")]
    elif isinstance(value, (list, tuple)) and not any(isinstance(v, bool) for v in value):
        ids = [str(v) for v in value]
    else:
        raise ValueError(f"GPU ids such as '0,1' or ['0', '1'], or 'none', not {value!r}")
    for gpu in ids:
        if not _GPU_ID_RE.match(gpu):
            raise ValueError(
                f"{gpu!r} is not a GPU id: use the numbers `nvidia-smi -L` shows, e.g. '0,1'"
            )
    if len(set(ids)) < len(ids):
        raise ValueError(f"GPU ids listed twice in {value!r}: each device once")
    return tuple(ids)
