"""The store file's schema, migrations and connection set-up (WAL), for :mod:`hpcexec.store`."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import CacheError
from .record import JobRecord

log = logging.getLogger("hpcexec.store")

SCHEMA_VERSION = 4
DB_NAME = "jobs.sqlite"
BUSY_TIMEOUT = 60.0  # seconds a write waits for another process's write before giving up
#: columns each schema version added, so an older cache is brought up to date when opened
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("epilogue TEXT", "epilogue_state TEXT"),
    3: ("gpu_ids TEXT", "attempts TEXT NOT NULL DEFAULT '[]'"),
    4: ("summary TEXT",),
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
    epilogue_state TEXT,
    gpu_ids TEXT,
    attempts TEXT NOT NULL DEFAULT '[]',
    summary TEXT
"""


class Gone(CacheError):
    """The store file is not at its path (removed under the client)."""


def connect(path: Path, *, create: bool = False) -> sqlite3.Connection:
    """A connection to the store file at ``path``; only ``create`` makes one there (a
    file that vanished is made again by the store alone, whole: see :func:`make_file`)."""
    target = path if create else f"{path.as_uri()}?mode=rw"
    try:
        conn = sqlite3.connect(
            target,
            timeout=BUSY_TIMEOUT,
            isolation_level=None,
            check_same_thread=False,
            uri=not create,
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        _set_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.OperationalError as e:
        if is_busy(e):
            raise busy(path) from e
        if not create and not path.exists():
            raise Gone(
                f"the job cache {path} was removed while this client opened it; run again"
            ) from e
        raise corrupt(path, e) from e
    except sqlite3.DatabaseError as e:
        raise corrupt(path, e) from e
    return conn


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


def is_busy(e: sqlite3.OperationalError) -> bool:
    """Whether SQLite gave up waiting for another connection's lock."""
    return "locked" in str(e) or "busy" in str(e)


def busy(path: Path) -> CacheError:
    """The error of a cache another process kept locked longer than a write waits, naming
    the processes that have it open."""
    who = holders(path)
    by = f" (open in {', '.join(who)})" if who else ""
    return CacheError(
        f"the job cache {path} has been busy for over {BUSY_TIMEOUT:g} s: another process is "
        f"writing to it{by}; run again once it is done, or stop it if it is stuck"
    )


def holders(path: Path) -> list[str]:
    """``pid (command)`` of the other processes that have the store file or its WAL open
    (from /proc; empty where there is none, or it may not be read)."""
    names = {str(path), f"{path}-wal"}
    out: list[str] = []
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    except OSError:
        return out
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in names for fd in fds):
                with open(f"/proc/{pid}/comm") as f:
                    out.append(f"{pid} ({f.read().strip()})")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return out


def corrupt(path: Path, e: Exception) -> CacheError:
    return CacheError(
        f"the job cache {path} cannot be read ({e}). It was left as it is: move it "
        f"aside (e.g. `mv {path} {path}.bad`) to start a new cache, or restore a backup."
    )


def check_version(path: Path) -> None:
    """Refuse a store file of a schema this hpcexec cannot read, before writing to it."""
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
        try:
            has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
            row = (
                has_meta
                and conn.execute("SELECT v FROM meta WHERE k = 'schema_version'").fetchone()
            )
        finally:
            conn.close()
    except sqlite3.OperationalError as e:
        raise (busy(path) if is_busy(e) else corrupt(path, e)) from e
    except sqlite3.DatabaseError as e:
        raise corrupt(path, e) from e
    if row and not _readable(row[0]):
        raise _version_error(path, row[0])


def _readable(version: str) -> bool:
    """This version or an older one (brought up to date by :data:`MIGRATIONS`)."""
    return version.isdigit() and 1 <= int(version) <= SCHEMA_VERSION


def _version_error(path: Path, found: str) -> CacheError:
    return CacheError(
        f"the job cache {path} has schema version {found}, this hpcexec "
        f"reads version {SCHEMA_VERSION} and older ones: use the hpcexec "
        f"version that wrote it, or a new cache directory."
    )


def init_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create the tables of a new store file, or bring an older one up to date (a file of
    this version is only read: a process that keeps writing to it does not stop others
    from opening it)."""
    try:
        if _current(conn):
            return
        with transaction(conn):
            conn.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
            row = conn.execute("SELECT v FROM meta WHERE k = 'schema_version'").fetchone()
            if row is None:
                conn.execute(f"CREATE TABLE jobs ({_COLUMNS})")
                conn.execute("CREATE INDEX jobs_state ON jobs (state, backend, host)")
                conn.execute("CREATE INDEX jobs_rev ON jobs (rev)")
                conn.execute("CREATE INDEX jobs_job_id ON jobs (job_id)")
                conn.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
                conn.execute("INSERT INTO meta VALUES ('rev', '0')")
                # the machine the cache is made on: merge tells its jobs from other hosts'
                conn.execute("INSERT INTO meta VALUES ('host', ?)", (os.uname().nodename,))
            elif not _readable(row[0]):
                raise _version_error(path, row[0])
            elif int(row[0]) < SCHEMA_VERSION:
                _migrate(conn, path, int(row[0]))
    except sqlite3.OperationalError as e:
        raise (busy(path) if is_busy(e) else corrupt(path, e)) from e
    except sqlite3.DatabaseError as e:
        raise corrupt(path, e) from e


def _current(conn: sqlite3.Connection) -> bool:
    """Whether the file has this version's schema already."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
        return False
    row = conn.execute("SELECT v FROM meta WHERE k = 'schema_version'").fetchone()
    return row is not None and row[0] == str(SCHEMA_VERSION)


def _migrate(conn: sqlite3.Connection, path: Path, found: int) -> None:
    """Bring a cache of an older schema up to date (inside the schema transaction, so
    two clients opening it at once migrate it once). Existing records keep their keys
    and values; new columns start empty."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    for version in range(found + 1, SCHEMA_VERSION + 1):
        for column in MIGRATIONS[version]:
            if column.split()[0] not in have:  # a column already there is kept
                conn.execute(f"ALTER TABLE jobs ADD COLUMN {column}")
    conn.execute("UPDATE meta SET v = ? WHERE k = 'schema_version'", (str(SCHEMA_VERSION),))
    log.info("job cache %s brought from schema version %d to %d", path, found, SCHEMA_VERSION)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on ``conn``, rolled back when its body raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def make_file(path: Path) -> None:
    """A new, initialised store file at ``path``, made aside and linked into place
    whole, so no other connection ever opens it half made."""
    tmp = path.with_name(f".{DB_NAME}.{os.getpid()}.{threading.get_ident()}.new")
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        init_schema(conn, path)
        conn.close()  # the last connection: its log is written into the file
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another client made one meanwhile: that one is used
        except OSError:  # a filesystem without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)


def read_records(db: Path) -> tuple[list[JobRecord], set[str]]:
    """Every record in another cache's store file, opened read-only, and the names its jobs
    give the machine the cache was used on: ``localhost``, the host the cache was made on
    (kept since schema 4's caches record it) and the host of its local backend's jobs.
    sqlite3.DatabaseError when it is no such file."""
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    src.row_factory = sqlite3.Row
    try:
        theirs = [JobRecord.from_row(r) for r in src.execute("SELECT * FROM jobs")]
        made_on = src.execute("SELECT v FROM meta WHERE k = 'host'").fetchone()
    finally:
        src.close()
    own = {"localhost", *(r.host for r in theirs if r.backend == "local")}
    if made_on is not None:
        own.add(made_on[0])
    return theirs, own
