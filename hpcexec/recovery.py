"""Job records rebuilt from job directories, so a lost or older store costs no finished work.

Each job directory carries its record as submitted (``record.json``, sealed with the cache's
key like the payload), and the client adds the job id (``jobid``) once it knows it (the
scheduler's answer to the submission; a local job's process, as it starts it, unless the fork
server's child wrote it first, with its started file); the job itself writes ``started``
(its id and host) and ``exitcode``. From these a lookup by key
rebuilds a record the store lacks, or one it holds from an older backup:

- an exit-code file: the job ended, completed when its code is 0, else failed;
- a started file: it runs (or ran and died: the driver's next poll says which), with that id;
- a job id file only: submitted, not started, with that id (the local queue adopts it);
- none of them: staged and never submitted; the driver submits it as usual.

A record file that is missing, unreadable or not sealed by this cache's key is not used.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from . import integrity
from .errors import IntegrityError, TransportError
from .jobfiles import parse_exitcode, signal_of
from .layout import EPILOGUE_LOG, EXITCODE, JOBID, RECORD, STARTED
from .record import JobRecord
from .states import JobState
from .transport.base import Transport

log = logging.getLogger(__name__)

JOBID_TMP = ".jobid.tmp"  # a job id file being written, renamed into place once whole


@dataclass(frozen=True)
class Submitted:
    """What a job id file says: the id, and for an element of an array whose elements may
    run each other's records, its index and the array's directory (to follow its claims)."""

    job_id: str
    array_index: int | None = None
    array_dir: str | None = None

    def text(self) -> str:
        if self.array_index is None:
            return self.job_id
        return f"{self.job_id} {self.array_index} {self.array_dir or ''}".rstrip()

    @classmethod
    def parse(cls, text: str) -> Submitted:
        parts = text.split("\n")[0].strip().split(" ", 2)
        index = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        return cls(parts[0], index, parts[2] if len(parts) > 2 and index is not None else None)


def record_file(rec: JobRecord, key: bytes) -> bytes:
    """What a job directory's record file holds: the record, sealed with ``key``."""
    return integrity.seal(key, rec.to_json())


def note_job_ids(transport: Transport, ids: dict[str, Submitted]) -> None:
    """Write each job directory's job id file (``{jobdir: what}``), each whole or not at all
    (written beside it, then renamed): all of them together, so an array over SSH costs
    three round trips, not some per element, and no process is started per element. A
    failure is logged: the record holds the ids all the same."""
    if not ids:
        return
    tmp = {jobdir: os.path.join(jobdir, JOBID_TMP) for jobdir in ids}
    why = ""
    try:
        transport.stage([], {tmp[d]: f"{what.text()}\n".encode() for d, what in ids.items()})
        failed = transport.renames([(tmp[d], os.path.join(d, JOBID)) for d in ids])
        why = next((str(e) for e in failed if e is not None), "")
    except (OSError, TransportError) as e:
        why = str(e) or type(e).__name__
    if why:
        log.warning(
            "could not keep the job ids of %d job(s) in their directories (%s); a "
            "lost cache could not tell they were submitted",
            len(ids),
            why,
        )


def started_as(transport: Transport, jobdir: str) -> str | None:
    """The id a job directory says its job was started or submitted as (its started file's,
    else its job id file's); None when it says neither, so the job was never started."""
    got = transport.read_files([os.path.join(jobdir, STARTED), os.path.join(jobdir, JOBID)])
    for data in got.values():
        if data is not None:
            return Submitted.parse(data.decode(errors="replace")).job_id
    return None


def worth_a_look(rec: JobRecord | None) -> bool:
    """Whether a lookup by key asks the job directory: the record is missing, or it would
    have the job submitted (again) where the directory may know it went further."""
    if rec is None:
        return True
    if rec.state.finished:
        return rec.state is not JobState.COMPLETED
    return rec.job_id is None


def newer(found: JobRecord, rec: JobRecord | None) -> bool:
    """Whether the record rebuilt from the directory should replace ``rec``: a later
    submission, or the same one seen further along."""
    if rec is None:
        return True
    if (found.submitted or 0.0) != (rec.submitted or 0.0):
        return (found.submitted or 0.0) > (rec.submitted or 0.0)
    return _progress(found) > _progress(rec)


def _progress(rec: JobRecord) -> int:
    return 2 if rec.state.finished else 1 if rec.job_id else 0


def rebuild(
    transport: Transport,
    keyring: integrity.KeyRing,
    jobdirs: dict[str, str],
    backend: str,
    host: str,
) -> dict[str, JobRecord]:
    """The records that the directories ``{key: jobdir}`` can rebuild, by key (files are
    read together: over SSH a few round trips for any number of keys)."""
    paths = {key: os.path.join(d, RECORD) for key, d in jobdirs.items()}
    got = transport.read_files(list(paths.values())) if paths else {}
    records: dict[str, JobRecord] = {}
    for key, path in paths.items():
        data = got.get(path)
        if data is not None:
            rec = _record(data, keyring, path, key, jobdirs[key], backend, host)
            if rec is not None:
                records[key] = rec
    names = (EXITCODE, STARTED, JOBID, EPILOGUE_LOG)
    files = (
        transport.read_files([os.path.join(r.jobdir, n) for r in records.values() for n in names])
        if records
        else {}
    )
    for rec in records.values():
        found = {n: files.get(os.path.join(rec.jobdir, n)) for n in names}
        _judge(rec, {n: v.decode(errors="replace") for n, v in found.items() if v is not None})
    return records


def _record(
    data: bytes,
    keyring: integrity.KeyRing,
    path: str,
    key: str,
    jobdir: str,
    backend: str,
    host: str,
) -> JobRecord | None:
    try:
        plain, _ = integrity.unseal(data, keyring, path)
        rec = JobRecord.from_json(plain)
    except (IntegrityError, ValueError, TypeError, KeyError) as e:
        log.warning(
            "the record file %s cannot be used (%s); job %s is treated as never submitted",
            path,
            e,
            key,
        )
        return None
    if (rec.key, rec.backend, rec.host) != (key, backend, host):
        log.warning(
            "the record file %s is of job %s on %s/%s, not %s on %s/%s; not used",
            path,
            rec.key,
            rec.backend,
            rec.host,
            key,
            backend,
            host,
        )
        return None
    rec.jobdir = jobdir  # where it was found, whatever the file says
    return rec


def _judge(rec: JobRecord, found: dict[str, str]) -> None:
    """Set what the job's own files say of how far it got (see the module's docstring)."""
    started = found.get(STARTED, "").split("\n")[0].strip()
    submitted = Submitted.parse(found.get(JOBID, ""))
    rec.job_id = started or submitted.job_id or None
    rec.array_index = submitted.array_index
    if submitted.array_dir:
        rec.resources["array_dir"] = submitted.array_dir
    rec.reason = None
    if EXITCODE in found:
        code, why = parse_exitcode(found[EXITCODE])
        rec.state = JobState.COMPLETED if code == 0 else JobState.FAILED
        rec.exit_code, rec.reason = code, why
        rec.signal = signal_of(code)
        rec.finished = time.time()
        if rec.epilogue and EPILOGUE_LOG in found:  # it ran: never run it twice
            ok = found[EPILOGUE_LOG].startswith("exit code 0\n")
            rec.epilogue_state = "done" if ok else f"failed: see {EPILOGUE_LOG}"
    elif started:
        rec.state = JobState.RUNNING
    elif rec.job_id:
        rec.state = JobState.PENDING if rec.state is not JobState.HELD else JobState.HELD
