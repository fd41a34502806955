"""The one SSH connection a transport keeps: opened lazily, and again after it drops."""

from __future__ import annotations

import logging
import threading

import paramiko

from ..errors import TransportError
from .sshconnect import Connection, Login

log = logging.getLogger(__name__)


class Link:
    """The live connection of ``login``; whether a request is repeated after a drop is the
    caller's decision. ``connections_opened`` counts the connections opened."""

    def __init__(self, login: Login) -> None:
        self.login = login
        self.connections_opened = 0
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # opening and dropping the connection

    @property
    def current(self) -> Connection | None:
        """The connection opened last, alive or not; None before the first or after close."""
        return self._conn

    def connection(self) -> Connection:
        """The live connection, opened (again) when there is none."""
        with self._lock:
            conn = self._conn
            if conn is not None:
                if conn.alive():
                    return conn
                log.warning("the SSH connection to %s dropped; connecting again", self.login.host)
                conn.close()
                self._conn = None
            self._conn = self.login.open()
            self.connections_opened += 1
            return self._conn

    def discard(self, conn: Connection) -> None:
        """Close ``conn``, found dead, so that the next request opens a new one."""
        with self._lock:
            if self._conn is conn:
                self._conn = None
        conn.close()

    def open_channel(self) -> tuple[Connection, paramiko.Channel]:
        """A new session channel; a dead connection is replaced first (nothing was sent)."""
        host = self.login.host
        for attempt in (1, 2):
            conn = self.connection()
            try:
                return conn, conn.transport.open_session(timeout=self.login.connect_timeout)
            except (paramiko.SSHException, OSError, EOFError) as e:
                if conn.alive():
                    raise TransportError(
                        f"{host} refused a new SSH session: {e} (too many "
                        "sessions at once? see MaxSessions in its "
                        "sshd_config)"
                    ) from e
                self.discard(conn)
                if attempt == 2:
                    raise TransportError(f"cannot open an SSH session on {host}: {e}") from e
                log.warning("the SSH connection to %s dropped (%s); connecting again", host, e)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            log.debug("closed the SSH connection to %s", self.login.host)
