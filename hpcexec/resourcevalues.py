"""The forms a resource value may take, each read and checked once: times, memory sizes,
whole numbers, words, environments, native directives, flags, mail and instants.
:mod:`hpcexec.resources` names which form each resource key takes."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from .isotime import parse_iso_datetime

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
_ADDRESS_RE = re.compile(r"^[A-Za-z0-9._%+-]+(?:@[A-Za-z0-9.-]+)?$")
#: mail events, in the order backends render them; "all" means every one
MAIL_EVENTS = ("begin", "end", "fail")
_INSTANT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


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


def positive_int(minimum: int) -> Callable[[Any], int]:
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


def any_text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a non-empty string")
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise ValueError("a string without newlines or control characters")
    return value


def word(value: Any) -> str:
    word = any_text(value)
    if not _WORD_RE.match(word):
        raise ValueError("letters, digits and . _ - @ + : / = only")
    return word


def env_pairs(value: Any) -> tuple[tuple[str, str], ...]:
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


def native_words(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError("a directive string or a list of them")
    return tuple(any_text(v) for v in value)


def flag(value: Any) -> bool | None:
    """True, or None for false (so that an unset flag and ``False`` are one cache key)."""
    if isinstance(value, str) and value.strip().lower() in (
        "1",
        "true",
        "yes",
        "y",
        "on",
        "0",
        "false",
        "no",
        "n",
        "off",
    ):
        value = value.strip().lower() in ("1", "true", "yes", "y", "on")
    if not isinstance(value, bool):
        raise ValueError(f"True or False, not {value!r}")
    return True if value else None


@dataclass(frozen=True)
class Mail:
    """Where the scheduler sends mail about a job, and on which events."""

    to: str
    on: tuple[str, ...] = ("end",)

    def to_dict(self) -> dict[str, Any]:
        return {"to": self.to, "on": list(self.on)}


def mail_spec(value: Any) -> Mail:
    """``"me@x.org"`` (mail when the job ends), ``"me@x.org:begin,fail"``, or
    ``{"to": "me@x.org", "on": ["end", "fail"]}``; events are begin, end, fail and all."""
    if isinstance(value, Mail):
        value = value.to_dict()
    if isinstance(value, str):
        address, sep, events = value.partition(":")
        value = {"to": address, "on": events.split(",")} if sep else {"to": address}
    if not isinstance(value, Mapping):
        raise ValueError(
            "an address such as 'me@example.org', 'me@example.org:end,fail', "
            "or {'to': 'me@example.org', 'on': ['end', 'fail']}"
        )
    extra = set(value) - {"to", "on"}
    if extra:
        raise ValueError(
            f"unknown mail field(s) {', '.join(sorted(map(str, extra)))}: use 'to' and 'on'"
        )
    to = value.get("to")
    if not isinstance(to, str) or not _ADDRESS_RE.match(to.strip()):
        raise ValueError(
            f"'to' must be one address such as 'me@example.org' or a user name, not {to!r}"
        )
    on = value.get("on", ("end",))
    words = [on] if isinstance(on, str) else on
    if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) for w in words):
        raise ValueError(f"'on' takes event names ({', '.join(MAIL_EVENTS)}, all), not {on!r}")
    wanted = {w.strip().lower() for w in words if w.strip()}
    bad = wanted - {*MAIL_EVENTS, "all"}
    if bad:
        raise ValueError(
            f"unknown mail event(s) {', '.join(sorted(bad))}: use {', '.join(MAIL_EVENTS)} or all"
        )
    if not wanted:
        raise ValueError("no mail events given: name at least one, or leave mail unset")
    if "all" in wanted:
        wanted = set(MAIL_EVENTS)
    return Mail(to.strip(), tuple(e for e in MAIL_EVENTS if e in wanted))


def instant(round_up: bool) -> Callable[[Any], str]:
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
