"""How the command line prints: aligned tables for people, JSON for programs."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from ..record import FIELD_NAMES, JobRecord

_HASH_KEY = re.compile(r"^[0-9a-f]{32}$")
SHORT_KEY = 12  # characters of a hashed key shown in tables (any unique prefix is accepted)
JOB_COLUMNS = ("KEY", "NAME", "HOST", "BACKEND", "ID", "STATE", "AGE", "WHAT")
WHAT_SHOWN = 40  # characters of a record's summary in a table (``show`` has all of it)


def short_key(key: str) -> str:
    """A hashed key's first characters; a key the user chose, whole."""
    return key[:SHORT_KEY] if _HASH_KEY.match(key) else key


def age(seconds: float | None) -> str:
    """``45s``, ``12m``, ``3h``, ``2d``."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def when(stamp: float | None) -> str:
    """A local time and how long ago it was."""
    if stamp is None:
        return "-"
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
    return f"{text} ({age(time.time() - stamp)} ago)"


def state_text(rec: JobRecord) -> str:
    """The state, with the exit code or signal of a job that ended otherwise than well."""
    text = rec.state.value
    if rec.signal:
        text += f" (signal {rec.signal})"
    elif rec.exit_code not in (None, 0):
        text += f" (exit {rec.exit_code})"
    return text


def job_row(rec: JobRecord, *, full_key: bool = False, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    return [
        rec.key if full_key else short_key(rec.key),
        rec.name or "-",
        rec.host,
        rec.backend,
        rec.job_id or "-",
        state_text(rec),
        age(now - rec.submitted if rec.submitted else None),
        _short(rec.summary or "-", WHAT_SHOWN),
    ]


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def record_dict(rec: JobRecord) -> dict[str, Any]:
    """A record as JSON-ready data: every field, the state as its name."""
    d = {name: getattr(rec, name) for name in FIELD_NAMES}
    d["state"] = rec.state.value
    return d


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns aligned with two spaces; the last one is not padded."""
    rows = [list(map(str, r)) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = []
    for r in [list(headers), *rows]:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)] + [r[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def pairs(items: Iterable[tuple[str, Any]]) -> str:
    """``name  value`` lines, names aligned."""
    items = [(k, "-" if v is None else str(v)) for k, v in items]
    width = max((len(k) for k, _ in items), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in items)


class Output:
    """Where results go: a table or text on stdout, or one JSON document with ``--json``."""

    def __init__(self, as_json: bool, stream: TextIO | None = None) -> None:
        self.as_json = as_json
        self.stream = stream or sys.stdout

    def emit(self, data: Any, text: str | None) -> None:
        """Print ``data`` as JSON, or ``text`` for people (nothing if it is None)."""
        if self.as_json:
            json.dump(data, self.stream, indent=2, default=str)
            self.stream.write("\n")
        elif text is not None:
            self.stream.write(text.rstrip("\n") + "\n")
        self.stream.flush()

    def emit_list(self, items: Iterable[Any]) -> None:
        """A JSON array written item by item, one item per line (a long listing starts at once,
        is never all in memory, and is written by the json module's fast encoder)."""
        first, encode = True, json.JSONEncoder(default=str).encode  # one encoder for all
        for item in items:
            self.stream.write(("[\n" if first else ",\n") + encode(item))
            first = False
        self.stream.write("[]\n" if first else "\n]\n")
        self.stream.flush()

    def jobs(
        self, records: Sequence[JobRecord], *, full_key: bool = False, empty: str = "no jobs"
    ) -> None:
        """Records as a table, or as JSON one per line (as every listing of jobs is)."""
        if self.as_json:
            self.emit_list(record_dict(r) for r in records)
            return
        now = time.time()
        text = (
            table(JOB_COLUMNS, [job_row(r, full_key=full_key, now=now) for r in records])
            if records
            else empty
        )
        self.emit(None, text)


def note(message: str) -> None:
    """A remark for people, on stderr (never mixed into JSON on stdout)."""
    print(f"hpcexec: {message}", file=sys.stderr)
