"""Which records a listing wants (states, backend, host, a regular expression), as SQL and a
test of raw rows, so that a listing streams and stops early instead of building every record."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .record import FIELD_NAMES, JSON_FIELDS
from .states import ACTIVE_STATES, JobState

#: the fields a listing's regular expression is searched in, by default
MATCH_FIELDS = (
    "key",
    "name",
    "job_id",
    "host",
    "backend",
    "state",
    "comment",
    "tags",
    "user_state",
    "summary",
)


@dataclass(frozen=True)
class Selection:
    """Records by state(s), backend, host, and a regular expression searched in ``fields``."""

    states: tuple[JobState, ...] | None = None
    backend: str | None = None
    hosts: tuple[str, ...] | None = None  # any of them
    match: re.Pattern[str] | None = None
    fields: tuple[str, ...] = MATCH_FIELDS

    @classmethod
    def of(
        cls,
        state: JobState | str | Iterable[JobState | str] | None = None,
        match: str | None = None,
        *,
        backend: str | None = None,
        host: str | Iterable[str] | None = None,
        fields: Iterable[str] = MATCH_FIELDS,
    ) -> Selection:
        """``host``: one host or several (records of any of them). ValueError for an unknown
        state or a bad regular expression, saying which."""
        rx = None
        if match is not None:
            try:
                rx = re.compile(match)
            except re.error as e:
                raise ValueError(f"bad regular expression {match!r}: {e}") from None
        return cls(
            states=None if state is None else tuple(expand_states(state)),
            backend=backend,
            hosts=None if host is None else (host,) if isinstance(host, str) else tuple(host),
            match=rx,
            fields=tuple(f for f in fields if f in FIELD_NAMES),
        )

    def where(self) -> tuple[str, list[Any]]:
        """The SQL condition on the columns (the regular expression is not in it)."""
        where, params = ["1"], []
        if self.states is not None:
            where.append(f"state IN ({','.join('?' * len(self.states))})")
            params += [s.value for s in self.states]
        if self.backend is not None:
            where.append("backend = ?")
            params.append(self.backend)
        if self.hosts is not None:
            where.append(f"host IN ({','.join('?' * len(self.hosts))})")
            params += self.hosts
        return " AND ".join(where), params

    def wants(self, row: sqlite3.Row) -> bool:
        """Whether a row the SQL condition let through matches the regular expression."""
        if self.match is None:
            return True
        return any(self.match.search(_text(row[f], f in JSON_FIELDS)) for f in self.fields)


def _text(value: Any, is_json: bool) -> str:
    """A column's value as the record's field reads (a list as its items, spaced)."""
    if value is None:
        return ""
    if is_json:
        value = json.loads(value) if value else []
        if isinstance(value, list):
            return " ".join(map(str, value))
    return str(value)


def expand_states(state: Any) -> list[JobState]:
    """States by name; ``active`` (not finished) and ``finished`` stand for several."""
    if isinstance(state, (str, JobState)):
        state = [state]
    out: list[JobState] = []
    for s in state:
        if s == "active":
            out += sorted(ACTIVE_STATES, key=lambda x: x.value)
        elif s == "finished":
            out += [x for x in JobState if x.finished]
        else:
            try:
                out.append(JobState(s))
            except ValueError:
                valid = ", ".join([x.value for x in JobState] + ["active", "finished"])
                raise ValueError(f"unknown state {s!r}; valid states: {valid}") from None
    return out
