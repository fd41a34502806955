"""Submitting jobs: cache lookup (and recovery of lost records), prologues, staging each
job's files privately, and inserting the records, which renames the files into place.

Files are staged under ``jobs/.new-<tag>-<key>`` and renamed into place inside the write
transaction, so two clients submitting the same key never write into one job directory.
What one submission staged, placed and set aside is kept in its own :class:`Staging`, so
the clean-up after it sees exactly its own directories.
"""

from __future__ import annotations

import logging
import os
import posixpath
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import hooks, integrity, recovery
from .checkpoint import DEFAULT_GRACE
from .errors import PrologueFailed
from .jobspec import Job
from .layout import PROLOGUE_LOG, RECORD, JobLayout
from .options import JobOptions
from .outcomes import layout
from .preview import job_script
from .record import INDEX_STEP, TASK_INDEX, JobRecord
from .registry import ANY, UNDECIDED
from .schedscript import FILE_DIRECTIVES
from .session import Session
from .states import JobState

log = logging.getLogger(__name__)


@dataclass
class Staging:
    """One submission's directories: staged, renamed into place, and earlier ones set
    aside (removed once the records are in)."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    staged: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # to write into them, all at once
    placed: set[str] = field(default_factory=set)
    replaced: list[str] = field(default_factory=list)


class Submitter:
    """Submits the jobs of one session."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.store = session.store
        self.transport = session.transport

    def submit_checked(self, jobs: list[Job], opts: JobOptions) -> None:
        """:meth:`submit` jobs that :meth:`check` passed already (when they were handed
        over; a workdir removed since fails the job at its start)."""
        self.submit(jobs, opts, checked=True)

    def submit(self, jobs: list[Job], opts: JobOptions, *, checked: bool = False) -> None:
        """Look the jobs up in the cache; submit those that must run; attach futures."""
        registry = self.session.registry
        unique: dict[str, Job] = {}
        for j in jobs:
            unique.setdefault(j.key, j)
            # Watch before any record is written, so no change can slip past the monitor;
            # undecided until it is known whether the job runs again (see registry).
            registry.watch(j.key, j.futures, after=UNDECIDED)
        known = self.store.get_many(unique)
        known.update(
            self.recover({k: known.get(k) for k in unique if recovery.worth_a_look(known.get(k))})
        )
        to_write = self._to_write(unique, known, opts)
        try:
            if not checked:  # a job that could never start is not written
                self.check(list(to_write.values()), opts)
            self._write(to_write, known, opts)
        except BaseException:
            for j in jobs:
                registry.unwatch(j.key, j.futures)
            raise
        for j in jobs:  # a job run again: its earlier run's record is not theirs
            before = known.get(j.key) if j.key in to_write else None
            registry.decide(j.futures, before.rev if before is not None else ANY)
        self.session.wake() if to_write else self.session.monitor.start()
        attached = [key for key in unique if key not in to_write]
        fresh = {k: known[k] for k in attached if known[k].state.finished}
        fresh.update(self.store.get_many(k for k in unique if k not in fresh))
        self.session.tracker.records_changed(fresh.values())

    def check(self, jobs: list[Job], opts: JobOptions) -> None:
        """Refuse at once a job that could never start (resources no node has, a workdir
        that does not exist) or whose texts cannot be written (a ``{placeholder}`` with no
        value, a task launcher the backend lacks): its script and hooks are rendered."""
        s = self.session
        after = sorted({f.jobdir for f in opts.after})
        hooks_texts = [*(opts.aux_scripts or {}).values(), opts.prologue, opts.epilogue]
        for j in jobs:
            s.backend.fits(j.res)
            if not s.remote:  # on another host the job's start tells
                s.check_workdir(s.placed(j.res)["workdir"])
            j.script = job_script(s, j, after)  # kept: staging writes this very text
            for text in filter(None, hooks_texts):
                hooks.render(text, j.res, j.name, s.job_dir(j.key), j.values)

    def _to_write(
        self, unique: dict[str, Job], known: dict[str, JobRecord], opts: JobOptions
    ) -> dict[str, Job]:
        """The jobs that must run: no record, or one that asks to run again."""
        to_write: dict[str, Job] = {}
        for key, j in unique.items():
            rec = known.get(key)
            if rec is None or _runs_again(rec, opts):
                to_write[key] = j
            elif rec.state is JobState.COMPLETED and not self._result_present(rec):
                log.warning("result of %s is missing from the cache; running it again", key)
                to_write[key] = j
        return to_write

    def found(self, job: Job, opts: JobOptions) -> bool:
        """Whether the cache holds a record of ``job`` that stands (finished and not to run
        again, or still on its way): submitting it reads the cache and writes nothing."""
        rec = self.store.get(job.key)
        return rec is not None and not _runs_again(rec, opts)

    def _result_present(self, rec: JobRecord) -> bool:
        return rec.kind == "shell" or self.transport.exists(layout(rec).result)

    def _write(
        self, to_write: dict[str, Job], known: dict[str, JobRecord], opts: JobOptions
    ) -> None:
        """Prologues, staged files, then the records and the renames in one transaction."""
        deps = sorted({f.key for f in opts.after})
        after_dirs = sorted({f.jobdir for f in opts.after})
        staging = Staging()
        try:
            now = time.time()
            records = {key: self._new_record(j, deps, opts, now) for key, j in to_write.items()}
            logs = self._prologues(to_write, opts.prologue)
            if to_write:  # e.g. the scheduler's limits, asked while the files are staged
                self.session.queue.expect(len(to_write))
            for key, j in to_write.items():
                self._stage(j, records[key], logs.get(key), staging, after_dirs, opts.aux_scripts)
            if staging.staged:  # nothing to write when every job was found in the cache
                self.transport.stage(staging.staged, staging.files)
            if to_write:
                self._insert(records, known, staging)
        finally:
            for path in staging.staged:  # what was not renamed into place
                if path not in staging.placed and self.transport.exists(path):
                    self.transport.remove_tree(path)
            for old in staging.replaced:
                self.transport.remove_tree(old)

    def _prologues(self, jobs: dict[str, Job], prologue: str | None) -> dict[str, bytes]:
        """Run the prologue of each job about to be submitted (once per distinct text);
        its log per key. A failure raises :class:`PrologueFailed` and nothing is submitted."""
        if not prologue:
            return {}
        ran: dict[str, bytes] = {}
        logs: dict[str, bytes] = {}
        for key, j in jobs.items():
            jobdir = self.session.job_dir(key)
            text = hooks.render(prologue, j.res, j.name, jobdir, j.values)
            if text not in ran:
                result, error = hooks.run_logged(
                    text, hooks.hook_env(key, j.name, jobdir, self.session.host)
                )
                if result is None or not result.ok:
                    raise PrologueFailed(
                        f"the prologue of job {j.name} ({key}) "
                        f"{hooks.hook_failure('', result, error).strip()}; nothing was "
                        f"submitted. Fix the prologue (or what it needs) and submit again"
                    )
                ran[text] = hooks.log_text(result)
            logs[key] = ran[text]
        return logs

    def recover(self, records: dict[str, JobRecord | None]) -> dict[str, JobRecord]:
        """Records rebuilt from the job directories of ``records`` (by key: what the store
        holds, None where it holds nothing) where a directory knows better (see
        :mod:`hpcexec.recovery`); they are put in the store and returned by key."""
        if not records:
            return {}
        s = self.session
        found = recovery.rebuild(
            self.transport,
            s.keyring,
            {key: s.job_dir(key) for key in records},
            s.backend.name,
            s.host,
        )
        better = {k: r for k, r in found.items() if recovery.newer(r, records[k])}
        if not better:
            return {}
        out: dict[str, JobRecord] = {}
        with self.store.write() as tx:
            for key, rec in better.items():
                cur, before = tx.get(key), records[key]
                if (cur.rev if cur else None) == (before.rev if before else None):
                    out[key] = tx.put(rec)  # else changed meanwhile: that record stands
        if out:
            log.warning(
                "%d job record(s) missing from the cache %s (or older there) were "
                "rebuilt from their job directories; finished results are reused",
                len(out),
                self.store.path,
            )
        return out

    def _new_record(self, j: Job, deps: list[str], opts: JobOptions, now: float) -> JobRecord:
        """The record of a job about to be submitted."""
        extra: dict[str, Any] = {}  # kept in the record only when not the default
        if opts.array_limit:
            extra["array_limit"] = opts.array_limit
        if not opts.reuse_slots:
            extra["reuse_slots"] = False
        if opts.retries:  # read by hpcexec.attempts when the job ends
            extra["retries"] = opts.retries
            if opts.retry_exit_codes:
                extra["retry_exit_codes"] = list(opts.retry_exit_codes)
        if j.requeue:  # a warning ahead of the walltime, to checkpoint
            extra["requeue"] = j.requeue
            extra["checkpoint_grace"] = opts.checkpoint_grace or DEFAULT_GRACE
        if j.directives:
            extra[FILE_DIRECTIVES] = list(j.directives)
        if j.index is not None:  # its place in its map: HPCEXEC_ARRAY_INDEX
            extra[TASK_INDEX] = j.index
            if j.n > 1:  # a chunk: its calls' indices go by this step
                extra[INDEX_STEP] = j.index_step
        s = self.session
        jobdir = s.job_dir(j.key)
        epilogue = opts.epilogue
        return JobRecord(
            key=j.key,
            backend=s.backend.name,
            host=s.host,
            kind=j.kind,
            jobdir=jobdir,
            state=JobState.HELD if opts.hold else JobState.PENDING,
            name=j.name,
            submitted=now,
            cores=j.res.cores,
            resources={**j.res.to_dict(), **s.placed(j.res), "python": s.python, **extra},
            deps=deps,
            epilogue=hooks.render(epilogue, j.res, j.name, jobdir, j.values) if epilogue else None,
            summary=j.summary or None,
        )

    def _stage(
        self,
        j: Job,
        rec: JobRecord,
        prologue_log: bytes | None,
        staging: Staging,
        after: list[str],
        aux: dict[str, str] | None,
    ) -> None:
        """Add a job's payload, script, other files, record copy and prologue log to what
        ``staging`` writes into its staging directory (renamed into place by
        :meth:`_insert`)."""
        stage = posixpath.join(str(self.session.jobs_dir), f".new-{staging.tag}-{j.key}")
        staging.staged.append(stage)
        jobdir = self.session.job_dir(j.key)
        staged = JobLayout(stage, stage)  # the job directory's files, before the rename

        def write(path: str, data: bytes) -> None:
            staging.files[path] = data

        if j.kind != "shell":
            assert j.file_bytes is not None
            write(staged.payload, integrity.seal(self.session.key, j.file_bytes))
        files = {
            **{
                name: hooks.render(text, j.res, j.name, jobdir, j.values).encode()
                for name, text in (aux or {}).items()
            },
            **j.files,
        }
        for name, data in files.items():
            write(staged.file(name), data)
        write(staged.script, (j.script or job_script(self.session, j, after)).encode())
        write(posixpath.join(stage, RECORD), recovery.record_file(rec, self.session.key))
        if prologue_log is not None:
            write(os.path.join(stage, PROLOGUE_LOG), prologue_log)

    def _insert(
        self, records: dict[str, JobRecord], known: dict[str, JobRecord], staging: Staging
    ) -> None:
        lost_race = 0
        with self.store.write() as tx:
            fresh: list[str] = []  # no directory yet
            again: list[str] = []  # an earlier run's directory, most likely
            for key in records:
                cur = tx.get(key)
                before = known.get(key)
                if cur is not None and (before is None or cur.rev != before.rev):
                    lost_race += 1  # another client submitted it meanwhile: attach to theirs
                    continue
                (again if cur is not None or before is not None else fresh).append(key)
            self._place(fresh, again, staging)
            for key in fresh + again:
                tx.put(records[key])
        if lost_race:
            log.info(
                "%d job(s) were submitted by another client at the same time; attaching", lost_race
            )

    def _place(self, fresh: list[str], again: list[str], staging: Staging) -> None:
        """Rename the staged directories into place: those of ``fresh`` keys together, then
        one by one those of ``again`` and of any ``fresh`` key whose directory turned out to
        exist, setting an earlier run's directory aside."""
        jobs_dir = str(self.session.jobs_dir)

        def new(key: str) -> str:
            return posixpath.join(jobs_dir, f".new-{staging.tag}-{key}")

        errors = self.transport.renames([(new(k), self.session.job_dir(k)) for k in fresh])
        one_by_one = list(again)
        for key, error in zip(fresh, errors, strict=True):
            if error is None:
                staging.placed.add(new(key))
            else:
                one_by_one.append(key)
        for key in one_by_one:
            jobdir = self.session.job_dir(key)
            if self.transport.exists(jobdir):  # an earlier run's files: set aside
                old = posixpath.join(jobs_dir, f".old-{staging.tag}-{key}")
                self.transport.rename(jobdir, old)
                staging.replaced.append(old)
            self.transport.rename(new(key), jobdir)
            staging.placed.add(new(key))


def _runs_again(rec: JobRecord, opts: JobOptions) -> bool:
    """Whether a job's finished record is replaced by a new run (``force``, or ``retry`` of
    one that did not complete)."""
    if not rec.state.finished:
        return False
    return opts.force or (opts.retry and rec.state is not JobState.COMPLETED)
