"""The store file under a Store: per-thread connections, and following a file replaced or removed."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

from .errors import CacheError
from .record import JobRecord
from .store_queries import Txn
from .store_schema import (
    Gone,
    busy,
    check_version,
    connect,
    init_schema,
    is_busy,
    make_file,
    transaction,
)

log = logging.getLogger("hpcexec.store")  # the store's own logger: its users filter on it


class StoreFile:
    """The SQLite file at ``path`` as one client sees it: a connection per thread, and,
    when another file is put at ``path`` (or it is removed), a move onto the new one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cache_dir = path.parent
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.RLock()
        # A connection's generation names the file it opened; a file replaced at self.path
        # starts a new one, and connections of older generations are dropped.
        self._gen = 0
        if self.path.exists():
            check_version(self.path)  # before anything is written to a file we may not read
        conn = connect(self.path, create=True)
        init_schema(conn, self.path)
        self._adopt(conn, 0)
        self._idents = {0: self._identity()}  # generation -> (st_dev, st_ino) of its file
        # A connection of this client's own on the file, for reading it once it was replaced.
        self._keeper: sqlite3.Connection | None = connect(self.path)

    # -- connections -------------------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        """This thread's connection, opened anew when the file it was on was replaced."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.gen != self._gen:
            self._drop(conn)
            conn = None
        while conn is None:
            gen = self._gen
            if self._identity() != self._idents[gen]:  # replaced before this thread looked
                self._notice(gen)
                continue
            try:
                conn = connect(self.path)
            except Gone:
                continue
            self._adopt(conn, gen)
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

    # -- the file at self.path -----------------------------------------------------------
    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def begin(self) -> sqlite3.Connection:
        """BEGIN IMMEDIATE on the file now at :attr:`path`. A file removed or replaced since
        it was opened is noticed here (one stat), under its write lock, so no change of this
        process goes into a file nobody will read again."""
        while True:
            conn = self.conn()
            gen = self._local.gen
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                if is_busy(e):
                    raise busy(self.path) from e
                raise
            if self._identity() == self._idents[gen]:
                return conn
            conn.execute("ROLLBACK")
            self._notice(gen)

    def check(self) -> None:
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
                raise CacheError(
                    f"the job cache {self.path} was removed or replaced after "
                    f"this client closed it; open it again"
                )
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
            raise CacheError(
                f"the cache directory {self.cache_dir} was removed while this "
                f"client used it, and the job files in it with it: end this "
                f"client and run again (finished results there are lost)"
            )
        gone = not self.path.exists()
        log.warning(
            "the job cache %s was removed or replaced while this client had it open; %s, "
            "with the %d record(s) this client knew (the newer of two records of one job "
            "kept). Remove or restore a cache only when no client uses it.",
            self.path,
            "it is made again" if gone else "the file now there is used",
            len(records),
        )
        if gone:
            make_file(self.path)
        check_version(self.path)
        conn = connect(self.path)
        init_schema(conn, self.path)
        ident = self._identity()
        with transaction(conn):
            conn.execute(
                "UPDATE meta SET v = ? WHERE k = 'rev' AND CAST(v AS INTEGER) < ?", (str(rev), rev)
            )
            tx = Txn(conn)
            for rec in records:
                cur = tx.get(rec.key)
                if cur is None or cur.modified < rec.modified:
                    tx.put(rec, touch=False)
            conn.execute("UPDATE jobs SET rev = ?", (tx.rev,))  # records kept are news too
        # Only now may other threads open the new file: none of their changes comes first.
        old, self._keeper = self._keeper, connect(self.path)
        if old is not None:
            old.close()
        self._idents[self._gen + 1] = ident
        self._gen += 1
        conn.close()
