"""ISO 8601 date-times as Python 3.11's ``datetime.fromisoformat`` reads them, on every
Python hpcexec supports (3.10's ``fromisoformat`` reads only what ``isoformat`` writes).

Forms read: a date ``YYYY-MM-DD``, ``YYYYMMDD``, ``YYYY-Www[-D]`` or ``YYYYWww[D]``, then
optionally any one separator character but a digit, and a time ``HH[:MM[:SS[.f+]]]`` or
``HH[MM[SS[.f+]]]`` (``,`` also marks the fraction; digits past the sixth are dropped),
then optionally ``Z`` or an offset ``±HH[:MM[:SS[.f+]]]`` or ``±HH[MM[SS[.f+]]]``.

An offset of a fraction of a second alone (``+00:00:00.5``) is that offset, as CPython's
pure-Python reader has it; its C reader (3.11-3.13) reads it as UTC.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone, tzinfo

_DATE_RE = re.compile(
    r"""(?P<year>\d{4})(?:
          -(?P<month>\d\d)-(?P<day>\d\d)
        | (?P<bmonth>\d\d)(?P<bday>\d\d)
        | -W(?P<week>\d\d)(?:-(?P<wday>\d)(?!\d))?  # 2030-W05-1800: week, '-', time
        | W(?P<bweek>\d\d)(?P<bwday>\d)?
    )""",
    re.VERBOSE | re.ASCII,
)


def _hms(p: str) -> str:
    """HH[:MM[:SS[.f+]]] or HH[MM[SS[.f+]]], its groups' names starting with ``p``."""
    return (
        rf"(?P<{p}h>\d\d)(?:"
        rf":(?P<{p}m>\d\d)(?::(?P<{p}s>\d\d)(?:[.,](?P<{p}frac>\d+))?)?"
        rf"|(?P<{p}bm>\d\d)(?:(?P<{p}bs>\d\d)(?:[.,](?P<{p}bfrac>\d+))?)?"
        r")?"
    )


_TIME_RE = re.compile(_hms("") + r"(?:(?P<z>Z)|(?P<sign>[+-])" + _hms("o") + r")?", re.ASCII)


def parse_iso_datetime(text: str) -> datetime:
    """The ``datetime`` that ``text`` names (naive when it has no offset).

    Raises ``ValueError`` for text that is not one of the forms in this module's docstring
    or that names no real date or time.
    """
    match = _DATE_RE.match(text)
    if match is None:
        raise ValueError(f"not an ISO 8601 date-time: {text!r}")
    day = _date(match)
    rest = text[match.end() + 1 :]
    separator = text[match.end() : match.end() + 1]
    time = _TIME_RE.fullmatch(rest) if rest and not separator.isdigit() else None
    if time is None:
        if match.end() == len(text):
            return datetime(day.year, day.month, day.day)
        raise ValueError(f"not an ISO 8601 date-time: {text!r}")
    hour, minute, second, micro = _clock(time, "")
    return datetime(day.year, day.month, day.day, hour, minute, second, micro, tzinfo=_zone(time))


def _date(match: re.Match[str]) -> date:
    g = match.groupdict()
    year = int(g["year"])
    week = g["week"] or g["bweek"]
    if week is not None:
        return date.fromisocalendar(year, int(week), int(g["wday"] or g["bwday"] or 1))
    return date(year, int(g["month"] or g["bmonth"]), int(g["day"] or g["bday"]))


def _clock(match: re.Match[str], prefix: str) -> tuple[int, int, int, int]:
    """Hours, minutes, seconds and microseconds of the time (prefix "") or offset ("o")."""
    g = match.groupdict()

    def part(name: str) -> str | None:
        return g[prefix + name] or g[prefix + "b" + name]

    fraction = (part("frac") or "")[:6]
    micro = int(fraction.ljust(6, "0")) if fraction else 0
    return (int(g[prefix + "h"]), int(part("m") or 0), int(part("s") or 0), micro)


def _zone(match: re.Match[str]) -> tzinfo | None:
    if match["z"]:
        return timezone.utc
    if not match["sign"]:
        return None
    hours, minutes, seconds, micro = _clock(match, "o")
    offset = timedelta(hours=hours, minutes=minutes, seconds=seconds, microseconds=micro)
    if not offset:
        return timezone.utc
    return timezone(-offset if match["sign"] == "-" else offset)
