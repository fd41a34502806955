"""Persistent job records in one SQLite database (WAL) inside the cache directory.

The record, not the process, is the source of truth: futures are views of records, and
any client that opens the same cache sees and may advance the same jobs. Every change
bumps a store-wide revision number, so a monitor reads only what changed since its last look.
The record itself is :mod:`hpcexec.record`; the schema :mod:`hpcexec.store_schema`, the named
queries and transactions :mod:`hpcexec.store_queries`, the file under it :mod:`hpcexec.store_file`.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from . import trust
from .cachelock import CacheLock
from .errors import CacheError
from .record import JobRecord, row_data
from .states import ACTIVE_STATES, JobState
from .store_file import StoreFile
from .store_queries import Queries, Txn
from .store_schema import DB_NAME, read_records
from .store_select import MATCH_FIELDS, Selection


class Store(Queries):
    """The job records of one cache directory. Safe to share between threads and processes."""

    @staticmethod
    def exists_in(cache_dir: str | Path) -> bool:
        """Whether ``cache_dir`` holds a store (opening one there would create it)."""
        return (Path(cache_dir) / DB_NAME).exists()

    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir)
        self.path = self.cache_dir / DB_NAME
        try:
            self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"cannot create the cache directory {self.cache_dir}: {e}") from e
        trust.check_cache(self.cache_dir, DB_NAME)
        self._file = StoreFile(self.path)
        self._locks: dict[str, CacheLock] = {}

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened anew when the file it was on was replaced."""
        return self._file.conn()

    @contextmanager
    def write(self) -> Iterator[Txn]:
        """One write transaction: every change in it gets the same new revision."""
        conn = self._file.begin()
        try:
            yield Txn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def exclusive(self, name: str) -> AbstractContextManager[None]:
        """Hold the cache's lock ``name`` (the file ``name.lock`` beside the store) for a
        ``with`` block: one holder at a time among this client's threads and every process on
        the cache (see :mod:`hpcexec.cachelock`). Independent of :meth:`write`."""
        lock = self._locks.setdefault(name, CacheLock(self.cache_dir / f"{name}.lock"))
        return lock.held()

    def check_file(self) -> None:
        """Notice a store file removed or replaced since it was opened (as a write does)."""
        self._file.check()

    def close(self) -> None:
        self._file.close()

    # -- reads ---------------------------------------------------------------------------
    def _cursor(self, sql: str, params: Iterable[Any]) -> sqlite3.Cursor:
        return self._conn().execute(sql, tuple(params))

    def query(self, where: str = "1", params: Iterable[Any] = ()) -> list[JobRecord]:
        """Records matching an SQL condition over the record's columns."""
        return self._records(where, params)

    def get(self, key: str) -> JobRecord | None:
        found = self.query("key = ?", (key,))
        return found[0] if found else None

    def get_many(self, keys: Iterable[str]) -> dict[str, JobRecord]:
        keys = list(keys)
        out: dict[str, JobRecord] = {}
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            marks = ",".join("?" * len(part))
            for r in self.query(f"key IN ({marks})", part):
                out[r.key] = r
        return out

    def revision(self) -> int:
        return int(self._conn().execute("SELECT v FROM meta WHERE k = 'rev'").fetchone()[0])

    def changed_since(self, rev: int) -> list[JobRecord]:
        """Records changed after revision ``rev`` (each monitor pass asks: it is also where
        a store file removed or replaced under a client that only reads is noticed)."""
        self.check_file()
        return self.query("rev > ?", (rev,))

    def find(self, prefix_or_id: str) -> list[JobRecord]:
        """Records whose key starts with ``prefix_or_id`` or whose job id equals it; where
        there are none, the records of that name (oldest first)."""
        return self.query(
            "key LIKE ? ESCAPE '\\' OR job_id = ?",
            (prefix_or_id.replace("%", r"\%").replace("_", r"\_") + "%", prefix_or_id),
        ) or self.query("name = ? ORDER BY submitted, key", (prefix_or_id,))

    def select(
        self,
        state: JobState | str | Iterable[JobState | str] | None = None,
        match: str | None = None,
        *,
        backend: str | None = None,
        host: str | Iterable[str] | None = None,
        fields: Iterable[str] = MATCH_FIELDS,
        newest: int | None = None,
    ) -> list[JobRecord]:
        """Records by state(s), backend, host, and a regular expression searched in ``fields``,
        oldest submitted first; ``newest``: only that many of the most recently submitted.

        ``state`` may also be ``"active"`` (not finished) or ``"finished"``; ValueError for an
        unknown state or a bad regular expression.
        """
        sel = Selection.of(state, match, backend=backend, host=host, fields=fields)
        if newest is None:
            return [JobRecord.from_row(r) for r in self._rows(sel)]
        rows = list(self._rows(sel, newest=max(newest, 0)))
        return [JobRecord.from_row(r) for r in reversed(rows)]

    def iter_select(
        self,
        state: JobState | str | Iterable[JobState | str] | None = None,
        match: str | None = None,
        *,
        backend: str | None = None,
        host: str | Iterable[str] | None = None,
        fields: Iterable[str] = MATCH_FIELDS,
    ) -> Iterator[JobRecord]:
        """:meth:`select`'s records, read from the store as they are used (a listing of many
        streams); the ValueError of a bad selection comes at once."""
        sel = Selection.of(state, match, backend=backend, host=host, fields=fields)
        return (JobRecord.from_row(r) for r in self._rows(sel))

    def iter_select_data(
        self,
        state: JobState | str | Iterable[JobState | str] | None = None,
        match: str | None = None,
        *,
        backend: str | None = None,
        host: str | Iterable[str] | None = None,
        fields: Iterable[str] = MATCH_FIELDS,
    ) -> Iterator[dict[str, Any]]:
        """:meth:`iter_select`'s records as JSON-ready data (:func:`~hpcexec.record.row_data`:
        every field, the state by name), without building records: what a listing of many
        prints."""
        sel = Selection.of(state, match, backend=backend, host=host, fields=fields)
        return (row_data(r) for r in self._rows(sel))

    def count(
        self,
        state: JobState | str | Iterable[JobState | str] | None = None,
        match: str | None = None,
        *,
        backend: str | None = None,
        host: str | Iterable[str] | None = None,
        fields: Iterable[str] = MATCH_FIELDS,
    ) -> int:
        """How many records :meth:`select` would return."""
        sel = Selection.of(state, match, backend=backend, host=host, fields=fields)
        if sel.match is None:
            where, params = sel.where()
            return int(
                self._cursor(f"SELECT COUNT(*) FROM jobs WHERE {where}", params).fetchone()[0]
            )
        return sum(1 for _ in self._rows(sel))

    def _rows(self, sel: Selection, *, newest: int | None = None) -> Iterator[sqlite3.Row]:
        """The rows of ``sel``, oldest first; ``newest``: that many of the newest, newest
        first (SQLite keeps only those while it sorts, unless a regular expression filters)."""
        where, params = sel.where()
        sql = f"SELECT * FROM jobs WHERE {where} ORDER BY submitted, key"
        if newest is not None:
            sql = sql.replace("submitted, key", "submitted DESC, key DESC")
            if sel.match is None:
                sql, params = f"{sql} LIMIT ?", [*params, newest]
        rows = (row for row in self._cursor(sql, params) if sel.wants(row))
        return rows if newest is None else itertools.islice(rows, newest)

    # -- changes -------------------------------------------------------------------------
    def annotate(
        self,
        key: str,
        *,
        comment: str | None = None,
        user_state: str | None = None,
        tags: Iterable[str] | None = None,
        name: str | None = None,
    ) -> JobRecord:
        """Set a comment, a user state (e.g. ``"analysed"``), tags or the name of a record
        (the fields that are the user's: its key and what it runs stay)."""
        values: dict[str, Any] = {"name": name} if name is not None else {}
        if comment is not None:
            values["comment"] = comment
        if user_state is not None:
            values["user_state"] = user_state
        if tags is not None:
            values["tags"] = sorted(set(tags))
        with self.write() as tx:
            if tx.get(key) is None:
                raise KeyError(f"no job record with key {key!r} in {self.path}")
            if values:
                tx.update(key, **values)
            rec = tx.get(key)
        assert rec is not None
        return rec

    def delete(self, keys: Iterable[str]) -> int:
        """Delete records (not their files); returns how many were deleted."""
        n = 0
        with self.write() as tx:
            for key in keys:
                n += tx.delete(key)
            if n:
                _ = tx.rev  # deleting is a change too
        return n

    def merge(self, other: str | Path, host: str) -> tuple[int, int]:
        """Bring in the records of another cache (a directory or its database file): those
        of jobs that ran on the other cache's own machine (its ``localhost``) as jobs on
        ``host``; those it ran on a third host over SSH keep that host. Where both caches
        have a key, the more recently modified record wins. Returns (records taken,
        records kept as they were)."""
        other = Path(other)
        db = other / DB_NAME if other.is_dir() else other
        if not db.exists():
            raise CacheError(f"no job cache at {other}: give the cache directory (e.g. .hpcexec)")
        try:
            theirs, own = read_records(db)
        except sqlite3.DatabaseError as e:
            raise CacheError(f"the job cache {db} cannot be read ({e})") from e
        taken = kept = 0
        with self.write() as tx:
            for rec in theirs:
                mine = tx.get(rec.key)
                if mine is not None and mine.modified >= rec.modified:
                    kept += 1
                    continue
                if rec.host in own:
                    rec.host = host
                tx.put(rec, touch=False)
                taken += 1
        return taken, kept

    def active(self, backend: str, host: str) -> list[JobRecord]:
        states = [s.value for s in ACTIVE_STATES]
        return self.query(
            f"state IN ({','.join('?' * len(states))}) AND backend = ? AND host = ?",
            [*states, backend, host],
        )
