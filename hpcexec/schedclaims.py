"""The claims of shared arrays as one status pass reads them (slot reuse, :mod:`hpcexec.slots`):
which element ran each record that another element of its array took, so the status poll
(:mod:`hpcexec.schedstatus`) follows such a record to that element, not its own.

Every array's ``claims/`` is listed together (over SSH: three round trips, not four per
array), beside the status command; the arrays of records that ended with no exit-code file
of their own are listed again, once per pass (their own element may have found them taken
and ended since the first listing).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .record import JobRecord
from .slots import CLAIMS, parse_claims
from .states import JobState
from .transport.base import Transport

T = TypeVar("T")


def _array(rec: JobRecord) -> str | None:
    """The directory of the shared array ``rec`` is a record of (None: it is not one)."""
    array_dir = rec.resources.get("array_dir")
    return array_dir if array_dir and rec.array_index is not None else None


class PassClaims:
    """The claims one status pass has read; :meth:`new_pass` forgets them."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._seen: dict[str, dict[int, str]] = {}  # array dir -> index -> element
        self._relisted: set[str] = set()  # array dirs whose claims were read again this pass

    def new_pass(self) -> None:
        self._seen = {}
        self._relisted = set()

    def read_beside(self, active: list[JobRecord], work: Callable[[], T]) -> T:
        """Run ``work`` (the status command) while the claims of the shared arrays of
        ``active`` are read in a thread beside it; an error of either is raised here."""
        arrays = [d for r in active if (d := r.resources.get("array_dir"))]
        if not arrays:
            return work()
        failed: list[BaseException] = []

        def read() -> None:
            try:
                self._read(arrays)
            except BaseException as e:  # raised in the caller's thread below  # noqa: BLE001
                failed.append(e)

        reader = threading.Thread(target=read, name="hpcexec-claims", daemon=True)
        reader.start()
        try:
            result = work()
        finally:
            reader.join()
        if failed:
            raise failed[0]
        return result

    def follow(self, active: list[JobRecord], updates: dict[str, dict[str, Any]]) -> list[str]:
        """Point records that another element of their array took at that element; returns
        the ids of their own elements that have not started (they need not)."""
        drop = []
        for rec in active:
            by = self.taken_elsewhere(rec)
            if by:
                if rec.state is JobState.PENDING and rec.job_id:
                    drop.append(rec.job_id)
                rec.job_id = by
                updates[rec.key]["job_id"] = by
        return drop

    def relist(self, recs: list[JobRecord], exits: dict[str, Any]) -> None:
        """Read again, together, the claims of the arrays of the records that ended with no
        exit-code file of their own (another element may have run them)."""
        dirs = [
            d for r in recs if exits[r.key] is None and (d := _array(r)) and d not in self._relisted
        ]
        if dirs:
            self._relisted.update(dirs)
            self._read(dirs)

    def taken_elsewhere(self, rec: JobRecord) -> str | None:
        """The element that runs ``rec`` if not its own, by the claims read this pass."""
        array_dir = _array(rec)
        if array_dir is None or rec.array_index is None:
            return None
        if array_dir not in self._seen:
            self._read([array_dir])
        by = self._seen[array_dir].get(rec.array_index)
        return by if by and by != rec.job_id else None

    def _read(self, array_dirs: list[str]) -> None:
        paths = {os.path.join(d, CLAIMS): d for d in dict.fromkeys(array_dirs)}
        for path, names in self.transport.list_dirs(list(paths)).items():
            self._seen[paths[path]] = parse_claims(names)[1]
