"""One job record (JobRecord) and its row and JSON forms; the store keeps them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .states import JobState

if TYPE_CHECKING:
    import sqlite3


@dataclass
class JobRecord:
    """One job as the cache knows it."""

    key: str
    backend: str
    host: str
    kind: str  # "call", "chunk" or "shell"
    jobdir: str
    state: JobState = JobState.PENDING
    name: str | None = None
    job_id: str | None = None
    array_index: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    submitted: float | None = None
    started: float | None = None
    finished: float | None = None
    modified: float = 0.0
    cores: int = 1
    resources: dict[str, Any] = field(default_factory=dict)
    deps: list[str] = field(default_factory=list)
    comment: str | None = None
    tags: list[str] = field(default_factory=list)
    user_state: str | None = None
    rev: int = 0
    #: shell text run on the submitting side once the job has ended (see hpcexec.epilogue)
    epilogue: str | None = None
    #: None (not run yet), "running: HOST PID:START", "done", "failed: ..." or
    #: "interrupted: ..." (its client ended while it ran; it is never run twice)
    epilogue_state: str | None = None
    #: the GPUs a running local job holds, comma-separated ids (see hpcexec.localqueue)
    gpu_ids: str | None = None
    #: the job's earlier runs, oldest first (see hpcexec.attempts): each a dict of job_id,
    #: state, exit_code, signal, reason, started, finished
    attempts: list[dict[str, Any]] = field(default_factory=list)
    #: what the job runs, in short: a shell body's first line, a call's function and
    #: arguments (see hpcexec.jobspec); shown by ``hpcexec jobs`` and searched by ``--match``
    summary: str | None = None

    @property
    def path(self) -> Path:
        return Path(self.jobdir)

    def to_row(self) -> dict[str, Any]:
        """The record as the store's columns (its JSON fields as text); the row is used at
        once, so its values are the record's own, not copies."""
        row = {name: getattr(self, name) for name in FIELD_NAMES}
        row["state"] = self.state.value
        for k in JSON_FIELDS:
            row[k] = json.dumps(row[k], sort_keys=True)
        return row

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRecord:
        d = row_data(row)
        d["state"] = JobState(d["state"])
        return cls(**d)

    def to_json(self) -> bytes:
        """The record as a job directory keeps it (see :mod:`hpcexec.recovery`)."""
        return json.dumps(self.to_row(), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> JobRecord:
        """A record from :meth:`to_json`; fields a later version added are left out.
        ValueError (or TypeError, KeyError) when ``data`` is not such a record."""
        row = json.loads(data)
        if not isinstance(row, dict):
            raise TypeError("a job record is a JSON object")
        known = {k: v for k, v in row.items() if k in FIELD_NAMES}
        return cls.from_row(known)  # type: ignore[arg-type]


FIELD_NAMES = tuple(f.name for f in fields(JobRecord))
#: the fields kept as JSON text in the store
JSON_FIELDS = ("resources", "deps", "tags", "attempts")


def row_data(row: sqlite3.Row | Mapping[str, Any]) -> dict[str, Any]:
    """A store row (or a job directory's record file) as data, its fields in
    :data:`FIELD_NAMES` order, its JSON fields decoded, its state as the state's name: what
    a record is as JSON, without building one (a listing of 100,000 records streams these).
    Fields the row lacks (written by an older hpcexec) are left out."""
    have = set(row.keys())
    d = {name: row[name] for name in FIELD_NAMES if name in have}
    for k in JSON_FIELDS:
        if k not in d:
            continue
        text = d[k]
        if not text or text == "[]":  # what most records hold: not worth a parse
            d[k] = {} if k == "resources" else []
        elif text == "{}":
            d[k] = {}
        else:
            d[k] = json.loads(text)
    return d


#: a record's ``resources`` key holding its place in its map (HPCEXEC_ARRAY_INDEX)
TASK_INDEX = "index"
#: ... and the step between the indices of its calls, for a chunk of several
INDEX_STEP = "index_step"


def task_index(rec: JobRecord, element: int | None) -> str:
    """The ``HPCEXEC_ARRAY_INDEX`` of ``rec``: its place in its map (a map over one range:
    the value), else ``element``, its place in the scheduler's array ("" for none)."""
    index = rec.resources.get(TASK_INDEX, element)
    return "" if index is None else str(index)
