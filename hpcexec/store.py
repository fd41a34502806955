"""Persistent job records in one SQLite database (WAL) inside the cache directory.

The record, not the process, is the source of truth: futures are views of records, and
any client that opens the same cache sees and may advance the same jobs. Every change
bumps a store-wide revision number, so a monitor reads only what changed since its last look.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

from . import trust
from .errors import CacheError
from .states import ACTIVE_STATES, JobState

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
DB_NAME = "jobs.sqlite"
#: columns each schema version added, so an older cache is brought up to date when opened
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE jobs ADD COLUMN epilogue TEXT",
        "ALTER TABLE jobs ADD COLUMN epilogue_state TEXT"),
}

_COLUMNS = """
    key TEXT PRIMARY KEY,
    name TEXT,
    backend TEXT NOT NULL,
    host TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    job_id TEXT,
    array_index INTEGER,
    exit_code INTEGER,
    signal INTEGER,
    reason TEXT,
    submitted REAL,
    started REAL,
    finished REAL,
    modified REAL NOT NULL,
    jobdir TEXT NOT NULL,
    cores INTEGER NOT NULL DEFAULT 1,
    resources TEXT NOT NULL DEFAULT '{}',
    deps TEXT NOT NULL DEFAULT '[]',
    comment TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    user_state TEXT,
    rev INTEGER NOT NULL DEFAULT 0,
    epilogue TEXT,
    epilogue_state TEXT
"""


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

    @property
    def path(self) -> Path:
        return Path(self.jobdir)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["state"] = self.state.value
        for k in ("resources", "deps", "tags"):
            row[k] = json.dumps(row[k], sort_keys=True)
        return row

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRecord:
        d = dict(row)
        d["state"] = JobState(d["state"])
        for k in ("resources", "deps", "tags"):
            d[k] = json.loads(d[k]) if d[k] else ({} if k == "resources" else [])
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
_MATCH_FIELDS = ("key", "name", "job_id", "host", "backend", "state", "comment", "tags", "user_state")


@dataclass(frozen=True)
class Queued:
    """The light columns of a pending job at the head of a queue."""

    key: str
    cores: int
    has_deps: bool
    begin: str | None  # its begin time (canonical UTC text), if any


def _states_in(states: Iterable[JobState]) -> tuple[str, list[str]]:
    values = sorted(s.value for s in states)
    return f"state IN ({','.join('?' * len(values))})", values


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class _Queries:
    """The named queries the drivers ask, read through the store or inside a transaction."""

    def _cursor(self, sql: str, params: Iterable[Any]) -> sqlite3.Cursor:
        raise NotImplementedError

    def _records(self, where: str, params: Iterable[Any]) -> list[JobRecord]:
        rows = self._cursor(f"SELECT * FROM jobs WHERE {where}", tuple(params)).fetchall()
        return [JobRecord.from_row(r) for r in rows]

    def jobs_in(self, backend: str, host: str, states: Iterable[JobState], *,
                submitted: bool | None = None) -> list[JobRecord]:
        """The records of ``backend`` on ``host`` in ``states``, oldest first; ``submitted``:
        only those with a job id (True) or without one (False)."""
        cond, values = _states_in(states)
        extra = {None: "", True: " AND job_id IS NOT NULL", False: " AND job_id IS NULL"}
        return self._records(f"backend = ? AND host = ? AND {cond}{extra[submitted]} "
                             "ORDER BY submitted, rowid", [backend, host, *values])

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

    def queue_head(self, backend: str, host: str, limit: int = 1000) -> list[Queued]:
        """The first ``limit`` pending records, oldest first, by their light columns only (a
        long queue costs no more than a short one)."""
        rows = self._cursor(
            "SELECT key, cores, deps, json_extract(resources, '$.begin') FROM jobs "
            "WHERE backend = ? AND host = ? AND state = 'pending' "
            "ORDER BY submitted, rowid LIMIT ?", [backend, host, limit]).fetchall()
        return [Queued(key, cores, deps != "[]", begin) for key, cores, deps, begin in rows]

    def past_deadline(self, backend: str, host: str, now: float) -> list[JobRecord]:
        """Queued (pending or held) records whose ``deadline`` is not after ``now``."""
        # Deadlines are canonical UTC text, so they compare as text.
        return self._records(
            "backend = ? AND host = ? AND state IN ('pending', 'held') "
            "AND json_extract(resources, '$.deadline') <= ?", [backend, host, _utc(now)])


class Txn(_Queries):
    """Reads and writes inside one write transaction (see :meth:`Store.write`)."""

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
        for k in ("resources", "deps", "tags"):
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

    def _cursor(self, sql: str, params: Iterable[Any]) -> sqlite3.Cursor:
        return self.conn.execute(sql, tuple(params))

    def query(self, where: str, params: Iterable[Any] = ()) -> list[JobRecord]:
        return self._records(where, params)


class Store(_Queries):
    """The job records of one cache directory. Safe to share between threads and processes."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir)
        self.path = self.cache_dir / DB_NAME
        try:
            self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"cannot create the cache directory {self.cache_dir}: {e}") from e
        trust.check_cache(self.cache_dir, DB_NAME)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.RLock()
        # A connection's generation names the file it opened; a file replaced at self.path
        # starts a new one, and connections of older generations are dropped.
        self._gen = 0
        if self.path.exists():
            self._check_version()  # before anything is written to a file we may not read
        conn = self._open(create=True)
        self._init_schema(conn)
        self._adopt(conn, 0)
        self._idents = {0: self._identity()}  # generation -> (st_dev, st_ino) of its file
        # A connection of this Store's own on the file, for reading it once it was replaced.
        self._keeper: sqlite3.Connection | None = self._open()

    # -- connections -------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened anew when the file it was on was replaced."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.gen != self._gen:
            self._drop(conn)
            conn = None
        while conn is None:
            gen = self._gen
            if self._identity() != self._idents[gen]:  # replaced before this thread looked
                self._notice(gen)
                continue
            try:
                conn = self._open()
            except _Gone:
                continue
            self._adopt(conn, gen)
        return conn

    def _open(self, *, create: bool = False) -> sqlite3.Connection:
        """A connection to the file at :attr:`path`; only ``create`` makes one there (a
        file that vanished is made again by :meth:`_follow` alone, whole)."""
        target = self.path if create else f"{self.path.as_uri()}?mode=rw"
        try:
            conn = sqlite3.connect(target, timeout=60.0, isolation_level=None,
                                   check_same_thread=False, uri=not create)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 60000")
            self._set_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise CacheError(f"the job cache {self.path} stayed locked for over a "
                                 "minute: is another process stuck holding it?") from e
            if not create and not self.path.exists():
                raise _Gone(f"the job cache {self.path} was removed while this client "
                            f"opened it; run again") from e
            raise self._corrupt(e) from e
        except sqlite3.DatabaseError as e:
            raise self._corrupt(e) from e
        return conn

    def _adopt(self, conn: sqlite3.Connection, gen: int) -> None:
        self._local.conn = conn
        self._local.gen = gen
        with self._lock:
            self._conns.append(conn)

    def _drop(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
        try:
            conn.close()
        except sqlite3.Error:
            pass
        self._local.conn = None

    @staticmethod
    def _set_wal(conn: sqlite3.Connection) -> None:
        # Switching to WAL needs a moment with no writer; the busy timeout does not cover
        # it, so a client opening a new cache while another initialises it retries here.
        deadline = time.monotonic() + 60
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _corrupt(self, e: Exception) -> CacheError:
        return CacheError(
            f"the job cache {self.path} cannot be read ({e}). It was left as it is: move it "
            f"aside (e.g. `mv {self.path} {self.path}.bad`) to start a new cache, or restore a backup."
        )

    def _check_version(self) -> None:
        try:
            conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=60.0)
            try:
                has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
                row = has_meta and conn.execute(
                    "SELECT v FROM meta WHERE k = 'schema_version'").fetchone()
            finally:
                conn.close()
        except sqlite3.DatabaseError as e:
            raise self._corrupt(e) from e
        if row and not self._readable(row[0]):
            raise self._version_error(row[0])

    @staticmethod
    def _readable(version: str) -> bool:
        """This version or an older one (brought up to date by :data:`MIGRATIONS`)."""
        return version.isdigit() and 1 <= int(version) <= SCHEMA_VERSION

    def _version_error(self, found: str) -> CacheError:
        return CacheError(f"the job cache {self.path} has schema version {found}, this hpcexec "
                          f"reads version {SCHEMA_VERSION} and older ones: use the hpcexec "
                          f"version that wrote it, or a new cache directory.")

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        try:
            with self._txn(conn):
                conn.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
                row = conn.execute("SELECT v FROM meta WHERE k = 'schema_version'").fetchone()
                if row is None:
                    conn.execute(f"CREATE TABLE jobs ({_COLUMNS})")
                    conn.execute("CREATE INDEX jobs_state ON jobs (state, backend, host)")
                    conn.execute("CREATE INDEX jobs_rev ON jobs (rev)")
                    conn.execute("CREATE INDEX jobs_job_id ON jobs (job_id)")
                    conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                    conn.execute("INSERT INTO meta VALUES ('rev', '0')")
                elif not self._readable(row[0]):
                    raise self._version_error(row[0])
                elif int(row[0]) < SCHEMA_VERSION:
                    self._migrate(conn, int(row[0]))
        except sqlite3.DatabaseError as e:
            raise self._corrupt(e) from e

    def _migrate(self, conn: sqlite3.Connection, found: int) -> None:
        """Bring a cache of an older schema up to date (inside the schema transaction, so
        two clients opening it at once migrate it once). Existing records keep their keys
        and values; new columns start empty."""
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
        conn.execute("UPDATE meta SET v = ? WHERE k = 'schema_version'", (str(SCHEMA_VERSION),))
        log.info("job cache %s brought from schema version %d to %d", self.path, found,
                 SCHEMA_VERSION)

    @contextmanager
    def _txn(self, conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def write(self) -> Iterator[Txn]:
        """One write transaction: every change in it gets the same new revision."""
        conn = self._begin()
        try:
            yield Txn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- the file under the store --------------------------------------------------------
    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _begin(self) -> sqlite3.Connection:
        """BEGIN IMMEDIATE on the file now at :attr:`path`. A file removed or replaced since
        it was opened is noticed here (one stat), under its write lock, so no change of this
        process goes into a file nobody will read again."""
        while True:
            conn = self._conn()
            gen = self._local.gen
            conn.execute("BEGIN IMMEDIATE")
            if self._identity() == self._idents[gen]:
                return conn
            conn.execute("ROLLBACK")
            self._notice(gen)

    def check_file(self) -> None:
        """Notice a store file removed or replaced since it was opened (as a write does)."""
        gen = self._gen
        if self._identity() != self._idents[gen]:
            self._notice(gen)

    def _notice(self, gen: int) -> None:
        """The file of generation ``gen`` is no longer at :attr:`path`: the first thread to
        see it reads it (under its write lock: writers still in it finish first, and every
        later one sees the change and comes here) and follows; the others open anew."""
        with self._lock:
            if gen != self._gen:
                return
            if self._keeper is None:
                raise CacheError(f"the job cache {self.path} was removed or replaced after "
                                 f"this client closed it; open it again")
            keeper = self._keeper
            keeper.execute("BEGIN IMMEDIATE")
            try:
                records = [JobRecord.from_row(r) for r in keeper.execute("SELECT * FROM jobs")]
                rev = int(keeper.execute("SELECT v FROM meta WHERE k = 'rev'").fetchone()[0])
            finally:
                keeper.execute("ROLLBACK")
            self._follow(records, rev)

    def _follow(self, records: list[JobRecord], rev: int) -> None:
        """Open the file now at :attr:`path` (a new one if it is gone) and write into it
        what this client knew of the file it had open: where both hold a record, the more
        recently modified one is kept. Every record taken gets a revision above any the
        old file gave out, so monitors following revisions see it."""
        if not self.cache_dir.is_dir():
            raise CacheError(f"the cache directory {self.cache_dir} was removed while this "
                             f"client used it, and the job files in it with it: end this "
                             f"client and run again (finished results there are lost)")
        gone = not self.path.exists()
        log.warning(
            "the job cache %s was removed or replaced while this client had it open; %s, "
            "with the %d record(s) this client knew (the newer of two records of one job "
            "kept). Remove or restore a cache only when no client uses it.", self.path,
            "it is made again" if gone else "the file now there is used", len(records))
        if gone:
            self._make_file()
        self._check_version()
        conn = self._open()
        self._init_schema(conn)
        ident = self._identity()
        with self._txn(conn):
            conn.execute("UPDATE meta SET v = ? WHERE k = 'rev' AND CAST(v AS INTEGER) < ?",
                         (str(rev), rev))
            tx = Txn(conn)
            for rec in records:
                cur = tx.get(rec.key)
                if cur is None or cur.modified < rec.modified:
                    tx.put(rec, touch=False)
            conn.execute("UPDATE jobs SET rev = ?", (tx.rev,))  # records kept are news too
        # Only now may other threads open the new file: none of their changes comes first.
        old, self._keeper = self._keeper, self._open()
        if old is not None:
            old.close()
        self._idents[self._gen + 1] = ident
        self._gen += 1
        conn.close()

    def _make_file(self) -> None:
        """A new, initialised store file at :attr:`path`, made aside and linked into place
        whole, so no other connection ever opens it half made."""
        tmp = self.path.with_name(f".{DB_NAME}.{os.getpid()}.{threading.get_ident()}.new")
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            self._init_schema(conn)
            conn.close()  # the last connection: its log is written into the file
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another client made one meanwhile: that one is used
            except OSError:  # a filesystem without hard links
                if not self.path.exists():
                    os.replace(tmp, self.path)
        finally:
            conn.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            for c in [*self._conns, *([self._keeper] if self._keeper else [])]:
                try:
                    c.close()
                except sqlite3.Error:
                    pass
            self._conns.clear()
            self._keeper = None
        self._local = threading.local()

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
        """Records whose key starts with ``prefix_or_id`` or whose job id equals it."""
        return self.query("key LIKE ? ESCAPE '\\' OR job_id = ?",
                           (prefix_or_id.replace("%", r"\%").replace("_", r"\_") + "%", prefix_or_id))

    def select(
        self,
        state: JobState | str | Iterable[JobState | str] | None = None,
        match: str | None = None,
        *,
        backend: str | None = None,
        host: str | None = None,
        fields: Iterable[str] = _MATCH_FIELDS,
    ) -> list[JobRecord]:
        """Records by state(s), backend, host, and a regular expression searched in ``fields``.

        ``state`` may also be ``"active"`` (not finished) or ``"finished"``.
        """
        where, params = ["1"], []
        if state is not None:
            states = _expand_states(state)
            where.append(f"state IN ({','.join('?' * len(states))})")
            params += [s.value for s in states]
        if backend is not None:
            where.append("backend = ?")
            params.append(backend)
        if host is not None:
            where.append("host = ?")
            params.append(host)
        records = self.query(" AND ".join(where) + " ORDER BY submitted, key", params)
        if match is not None:
            try:
                rx = re.compile(match)
            except re.error as e:
                raise ValueError(f"bad regular expression {match!r}: {e}") from None
            names = [f for f in fields if f in FIELD_NAMES]
            records = [r for r in records if any(rx.search(_text(getattr(r, f))) for f in names)]
        return records

    # -- changes -------------------------------------------------------------------------
    def annotate(
        self,
        key: str,
        *,
        comment: str | None = None,
        user_state: str | None = None,
        tags: Iterable[str] | None = None,
    ) -> JobRecord:
        """Set a comment, a user state (e.g. ``"analysed"``) or tags on a record."""
        values: dict[str, Any] = {}
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
                n += tx.conn.execute("DELETE FROM jobs WHERE key = ?", (key,)).rowcount
            if n:
                tx.rev  # deleting is a change too
        return n

    def merge(self, other: str | Path, host: str) -> tuple[int, int]:
        """Bring in the records of another cache (a directory or its database file) under
        ``host``; where both have a key, the more recently modified record wins.
        Returns (records taken, records kept as they were)."""
        other = Path(other)
        db = other / DB_NAME if other.is_dir() else other
        if not db.exists():
            raise CacheError(f"no job cache at {other}: give the cache directory (e.g. .hpcexec)")
        try:
            src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            src.row_factory = sqlite3.Row
            theirs = [JobRecord.from_row(r) for r in src.execute("SELECT * FROM jobs")]
            src.close()
        except sqlite3.DatabaseError as e:
            raise CacheError(f"the job cache {db} cannot be read ({e})") from e
        taken = kept = 0
        with self.write() as tx:
            for rec in theirs:
                mine = tx.get(rec.key)
                if mine is not None and mine.modified >= rec.modified:
                    kept += 1
                    continue
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


class _Gone(CacheError):
    """The store file is not at its path (removed under the client)."""


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return " ".join(map(str, v))
    return str(v)


def _expand_states(state: Any) -> list[JobState]:
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
