"""The store's named queries and its write transaction (Txn), over one SQLite connection."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .record import FIELD_NAMES, JSON_FIELDS, JobRecord
from .resources import node_gpu_count
from .states import JobState


@dataclass(frozen=True)
class Queued:
    """The light columns of a pending job at the head of a queue."""

    key: str
    cores: int
    has_deps: bool
    begin: str | None  # its begin time (canonical UTC text), if any
    gpus: int = 0  # GPUs it needs (per node: the local backend has one)


_LANE = "json_extract(resources, '$.lane')"  # see hpcexec.locallanes


def _states_in(states: Iterable[JobState]) -> tuple[str, list[str]]:
    values = sorted(s.value for s in states)
    return f"state IN ({','.join('?' * len(values))})", values


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class Queries:
    """The named queries the drivers ask, read through the store or inside a transaction."""

    def _cursor(self, sql: str, params: Iterable[Any]) -> sqlite3.Cursor:
        raise NotImplementedError

    def _records(self, where: str, params: Iterable[Any]) -> list[JobRecord]:
        rows = self._cursor(f"SELECT * FROM jobs WHERE {where}", tuple(params)).fetchall()
        return [JobRecord.from_row(r) for r in rows]

    def jobs_in(
        self, backend: str, host: str, states: Iterable[JobState], *, submitted: bool | None = None
    ) -> list[JobRecord]:
        """The records of ``backend`` on ``host`` in ``states``, oldest first; ``submitted``:
        only those with a job id (True) or without one (False)."""
        cond, values = _states_in(states)
        extra = {None: "", True: " AND job_id IS NOT NULL", False: " AND job_id IS NULL"}
        return self._records(
            f"backend = ? AND host = ? AND {cond}{extra[submitted]} ORDER BY submitted, rowid",
            [backend, host, *values],
        )

    def any_in(self, backend: str, host: str, states: Iterable[JobState]) -> bool:
        """Whether any record of ``backend`` on ``host`` is in ``states``."""
        cond, values = _states_in(states)
        sql = f"SELECT 1 FROM jobs WHERE backend = ? AND host = ? AND {cond} LIMIT 1"
        return self._cursor(sql, [backend, host, *values]).fetchone() is not None

    def cores_in(self, backend: str, host: str, states: Iterable[JobState]) -> int:
        """The cores of the records of ``backend`` on ``host`` in ``states``, summed."""
        cond, values = _states_in(states)
        sql = f"SELECT COALESCE(SUM(cores), 0) FROM jobs WHERE backend = ? AND host = ? AND {cond}"
        return int(self._cursor(sql, [backend, host, *values]).fetchone()[0])

    def queue_head(self, backend: str, host: str, limit: int = 1000) -> Iterator[Queued]:
        """The first ``limit`` pending records, oldest first, by their light columns only, read
        as they are taken (a caller that stops early reads no more of a long queue)."""
        rows = self._cursor(
            "SELECT key, cores, deps, json_extract(resources, '$.begin'), "
            "json_extract(resources, '$.gpus'), json_extract(resources, '$.gpus_per_task'), "
            "json_extract(resources, '$.ppn') FROM jobs "
            "WHERE backend = ? AND host = ? AND state = 'pending' "
            f"AND {_LANE} IS NULL ORDER BY submitted, rowid LIMIT ?",
            [backend, host, limit],
        )
        for key, cores, deps, begin, g, t, p in rows:
            yield Queued(
                key,
                cores,
                deps != "[]",
                begin,
                node_gpu_count(dict(gpus=g, gpus_per_task=t, ppn=p)),
            )

    def in_lanes(self, backend: str, host: str) -> list[JobRecord]:
        """The pending records handed to a lane of the fork server (:mod:`hpcexec.locallanes`),
        in their order."""
        return self._records(
            f"backend = ? AND host = ? AND state = 'pending' AND {_LANE} IS NOT NULL "
            "ORDER BY submitted, rowid",
            [backend, host],
        )

    def lane_cores_waiting(self, backend: str, host: str) -> int:
        """The cores of the lanes with a pending record and no running one: between two of
        their jobs (see :mod:`hpcexec.locallanes`)."""
        cond, values = _states_in((JobState.RUNNING, JobState.SUSPENDED))
        sql = (
            f"SELECT COALESCE(SUM(c), 0) FROM (SELECT {_LANE} AS lane, MAX(cores) AS c "
            f"FROM jobs WHERE backend = ? AND host = ? AND state = 'pending' "
            f"AND {_LANE} IS NOT NULL GROUP BY lane) WHERE lane NOT IN (SELECT {_LANE} "
            f"FROM jobs WHERE backend = ? AND host = ? AND {cond} AND {_LANE} IS NOT NULL)"
        )
        return int(self._cursor(sql, [backend, host, backend, host, *values]).fetchone()[0])

    def gpus_held(self, backend: str, host: str, states: Iterable[JobState]) -> set[str]:
        """The GPU ids the records of ``backend`` on ``host`` in ``states`` hold."""
        cond, values = _states_in(states)
        sql = (
            f"SELECT gpu_ids FROM jobs WHERE backend = ? AND host = ? AND {cond} "
            "AND gpu_ids IS NOT NULL"
        )
        rows = self._cursor(sql, [backend, host, *values]).fetchall()
        return {gpu for (ids,) in rows for gpu in ids.split(",") if gpu}

    def past_deadline(self, backend: str, host: str, now: float) -> list[JobRecord]:
        """Queued (pending or held) records whose ``deadline`` is not after ``now``."""
        # Deadlines are canonical UTC text, so they compare as text.
        return self._records(
            "backend = ? AND host = ? AND state IN ('pending', 'held') "
            "AND json_extract(resources, '$.deadline') <= ?",
            [backend, host, _utc(now)],
        )


class Txn(Queries):
    """Reads and writes inside one write transaction (see :meth:`hpcexec.store.Store.write`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._rev: int | None = None

    @property
    def rev(self) -> int:
        """The revision every change in this transaction carries (taken on first change)."""
        if self._rev is None:
            self.conn.execute("UPDATE meta SET v = CAST(v AS INTEGER) + 1 WHERE k = 'rev'")
            self._rev = int(self.conn.execute("SELECT v FROM meta WHERE k = 'rev'").fetchone()[0])
        return self._rev

    def get(self, key: str) -> JobRecord | None:
        row = self.conn.execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone()
        return JobRecord.from_row(row) if row else None

    def put(self, rec: JobRecord, *, touch: bool = True) -> JobRecord:
        """Insert or replace a whole record (``touch=False`` keeps its modification time)."""
        if touch:
            rec.modified = time.time()
        rec.rev = self.rev
        row = rec.to_row()
        cols = ", ".join(row)
        marks = ", ".join(f":{c}" for c in row)
        self.conn.execute(f"INSERT OR REPLACE INTO jobs ({cols}) VALUES ({marks})", row)
        return rec

    def update(self, key: str, **values: Any) -> None:
        bad = set(values) - set(FIELD_NAMES)
        if bad:
            raise ValueError(f"unknown record fields: {sorted(bad)}")
        for k in JSON_FIELDS:
            if k in values:
                values[k] = json.dumps(values[k], sort_keys=True)
        if isinstance(values.get("state"), JobState):
            values["state"] = values["state"].value
        if self.conn.execute("SELECT 1 FROM jobs WHERE key = ?", (key,)).fetchone() is None:
            return  # deleted meanwhile: nothing changes, so no new revision
        values["modified"] = time.time()
        values["rev"] = self.rev
        sets = ", ".join(f"{k} = :{k}" for k in values)
        self.conn.execute(f"UPDATE jobs SET {sets} WHERE key = :_key", {**values, "_key": key})

    def delete(self, key: str) -> int:
        """Delete one record (not its files); how many were deleted (0 or 1)."""
        return self.conn.execute("DELETE FROM jobs WHERE key = ?", (key,)).rowcount

    def _cursor(self, sql: str, params: Iterable[Any]) -> sqlite3.Cursor:
        return self.conn.execute(sql, tuple(params))

    def query(self, where: str, params: Iterable[Any] = ()) -> list[JobRecord]:
        return self._records(where, params)
